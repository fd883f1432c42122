"""The embedded benchmark behind ``semcache bench --embedded``.

Every figure is set against a baseline measured in the same run, so the
ratios hold on any machine:

* **semantic lookup** (embed + search + guard, the model memo disabled) against
  the bare model call on the same text, measured interleaved;
* **exact hit** (normalise, hash, one dict read) against the same bare embedding;
* **put throughput** with precomputed vectors (the engine alone), in memory and
  with a write-ahead log;
* **search** at growing sizes (random unit vectors), as time added over a
  1-entry index;
* **memory per entry**: resident-set growth over the fill, per entry, minus the
  key and value bytes.

>>> Summary.of([0.001, 0.002, 0.003]).median
0.002
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import SemanticCache
from .embeddings import BaseEmbedding
from .index import IndexSettings
from .kv import SemanticKV

DEFAULT_SIZES = (1_000, 10_000, 100_000)
TARGETS = {
    "semantic": 1.10,  # semantic lookup p50 / bare embedding p50
    "exact": 0.02,  # exact hit p50 / bare embedding p50
    "search_ms": 0.5,  # search at 100K: added over a 1-entry index
    "bytes_per_entry": 2560,  # RSS per entry beyond the payload
}
PAYLOAD_BYTES = 200  # value size of the fill entries (a short cached answer)
FILL_CHUNK = 1024
DEFAULT_EF_SEARCH = IndexSettings().ef_search

CACHED = (
    "How do I enable dark mode?",
    "How do I read a file in Python?",
    "What is the capital of France?",
    "How do I reset my password?",
    "What are the health benefits of green tea?",
    "How many days are in a leap year?",
    "What is the difference between TCP and UDP?",
    "How do I center a div in CSS?",
)
PARAPHRASES = (
    "How can I turn on dark mode?",
    "In Python, how do I read a file?",
    "What's the capital city of France?",
    "How can I reset my password?",
    "What health benefits does green tea have?",
    "How many days does a leap year have?",
    "What's the difference between UDP and TCP?",
    "How can I center a div with CSS?",
)


@dataclass(frozen=True)
class Summary:
    """Order statistics of latency samples, in seconds."""

    count: int
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        ordered = sorted(samples)

        def rank(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return cls(len(ordered), statistics.median(ordered), rank(0.90), rank(0.99), ordered[-1])


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU-time summaries of the same calls.

    CPU time (all threads of this process) is what a call costs; wall time is
    what a caller waits, which on a shared machine includes waiting for a core.
    """

    wall: Summary
    cpu: Summary


class Timer:
    """Collects wall-clock and CPU time of each call made through it."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result

    def timing(self) -> Timing:
        return Timing(Summary.of(self.wall), Summary.of(self.cpu))


def bare_embed(embedding: BaseEmbedding) -> Callable[[str], Any]:
    """The model call alone for one text: no memo, batching or checks (the baseline)."""
    return lambda text: embedding._encode([text])


@dataclass
class LookupTimes:
    embed: Timing
    semantic: Timing
    exact: Timing
    semantic_hits: int


def measure_lookups(cache: SemanticCache, rounds: int, *, progress: bool = False) -> LookupTimes:
    """Interleave bare embedding, semantic lookup and exact lookup of the same texts.

    ``cache`` must embed every call (a memo of 0): otherwise a repeated query
    would skip the model and flatter the semantic path.
    """
    for prompt in CACHED:
        cache.store(prompt, f"answer to: {prompt}")
    embed = bare_embed(cache.embedding)
    for text in PARAPHRASES[:2]:  # warm-up: first calls allocate
        embed(text)
        cache.lookup(text)
    embed_timer, semantic_timer, exact_timer = Timer(), Timer(), Timer()
    hits = 0
    steps: Iterable[int] = range(rounds)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="lookups", unit="round")
    for step in steps:
        query = PARAPHRASES[step % len(PARAPHRASES)]
        embed_timer(lambda q=query: embed(q))  # type: ignore[misc]
        hit = semantic_timer(lambda q=query: cache.lookup(q))  # type: ignore[misc]
        hits += hit is not None and not hit.exact
        prompt = CACHED[step % len(CACHED)]
        exact_timer(lambda p=prompt: cache.lookup(p))  # type: ignore[misc]
    return LookupTimes(embed_timer.timing(), semantic_timer.timing(), exact_timer.timing(), hits)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass
class FillResult:
    """Search latency per size and memory over the whole fill."""

    search: dict[int, Timing]  # unrelated queries (random unit vectors)
    near: dict[int, Timing]  # paraphrase-like queries (a stored vector, slightly moved)
    near_found: dict[int, float]  # share of paraphrase-like queries whose own entry came first
    ef_search: int
    put_per_second: float  # wall clock
    put_per_cpu_second: float
    bytes_per_entry: float
    payload_per_entry: float
    entries: int


def measure_fill(
    embedding: BaseEmbedding,
    sizes: Sequence[int],
    queries: int,
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
    seed: int = 7,
    progress: bool = False,
) -> FillResult:
    """Fill one in-memory store with random unit vectors, timing search at 1 entry and at each size.

    Two query sets: unrelated queries (random unit vectors: the miss path) and
    paraphrase-like ones (a stored vector moved to similarity about 0.98: the
    hit path).
    """
    rng = np.random.default_rng(seed)
    value = bytes(rng.integers(32, 127, PAYLOAD_BYTES, dtype=np.uint8))
    query_vectors = unit_vectors(rng, queries, embedding.dim)
    largest = max(sizes)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=largest, desc="fill", unit="entry", unit_scale=True)
    search: dict[int, Timing] = {}
    near: dict[int, Timing] = {}
    near_found: dict[int, float] = {}
    kept: list[tuple[str, np.ndarray]] = []  # a few stored entries per chunk, to make paraphrase-like queries
    payload = 0
    put_seconds = put_cpu_seconds = 0.0
    before = rss_bytes()
    with SemanticKV(embedding=embedding, max_entries=largest, ef_search=ef_search, purge_interval=3600) as kv:
        filled = 0
        for target in sorted({1, *sizes}):
            while filled < target:
                # Vectors are made a chunk at a time, so they do not count as the store's memory.
                batch = unit_vectors(rng, min(FILL_CHUNK, target - filled), embedding.dim)
                start, start_cpu = time.perf_counter(), time.process_time()
                for row in range(len(batch)):
                    key = f"bench:{filled + row:09d}"
                    kv.put(key, value, vector=batch[row])
                    payload += len(key) + len(value)
                put_seconds += time.perf_counter() - start
                put_cpu_seconds += time.process_time() - start_cpu
                filled += len(batch)
                kept.extend(
                    (f"bench:{filled - len(batch) + row:09d}", batch[row].copy()) for row in range(min(8, len(batch)))
                )
                if bar is not None:
                    bar.update(len(batch))
            search[target], _ = _time_searches(kv, query_vectors)
            picked = [kept[i] for i in rng.integers(0, len(kept), queries)]
            moved = np.stack([vector for _, vector in picked])
            near[target], firsts = _time_searches(kv, moved + rng.normal(0, 0.01, moved.shape).astype(np.float32))
            near_found[target] = sum(key == first for (key, _), first in zip(picked, firsts, strict=True)) / queries
        grown = rss_bytes() - before
    if bar is not None:
        bar.close()
    return FillResult(
        search,
        near,
        near_found,
        ef_search,
        filled / put_seconds,
        filled / put_cpu_seconds,
        grown / filled,
        payload / filled,
        filled,
    )


def _time_searches(kv: SemanticKV, vectors: np.ndarray) -> tuple[Timing, list[str | None]]:
    """Time ``search(top_k=3)`` for each vector; also return each top key."""
    timer = Timer()
    firsts: list[str | None] = []
    for vector in vectors:
        results = timer(lambda v=vector: kv.search(None, 3, vector=v))  # type: ignore[misc]
        firsts.append(results[0].key if results else None)
    return timer.timing(), firsts


def measure_durable_puts(embedding: BaseEmbedding, count: int, *, seed: int = 11) -> tuple[float, float]:
    """Puts per (wall, CPU) second with precomputed vectors into a store with a write-ahead log."""
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, count, embedding.dim)
    value = b"x" * PAYLOAD_BYTES
    with (
        tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp,
        SemanticKV(tmp, embedding=embedding, purge_interval=3600) as kv,
    ):
        start, start_cpu = time.perf_counter(), time.process_time()
        for row in range(count):
            kv.put(f"bench:{row:09d}", value, vector=vectors[row])
        return count / (time.perf_counter() - start), count / (time.process_time() - start_cpu)


@dataclass
class BenchReport:
    lookups: LookupTimes
    fill: FillResult
    durable_puts_per_second: tuple[float, float]  # wall, CPU
    environment: dict[str, str] = field(default_factory=dict)


def environment(embedding: BaseEmbedding) -> dict[str, str]:
    """Hardware and library versions, for the table's footer."""
    import hnswlib  # noqa: F401 - imported for its version below
    import sentence_transformers
    import torch

    from . import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    return {
        "cpu": f"{cpu} ({os.cpu_count()} cores visible)",
        "python": platform.python_version(),
        "semcache": __version__,
        "numpy": np.__version__,
        "hnswlib": version("hnswlib"),
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "model": f"{embedding.model_id} (dim {embedding.dim})",
        "torch threads": str(torch.get_num_threads()),
    }


def run(
    embedding: BaseEmbedding,
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    rounds: int = 300,
    queries: int = 500,
    durable_puts: int = 5_000,
    ef_search: int = DEFAULT_EF_SEARCH,
    progress: bool = False,
) -> BenchReport:
    """Run every measurement; ``embedding`` should have ``memo_size=0``."""
    cache = SemanticCache(SemanticKV(embedding=embedding, purge_interval=3600))
    try:
        lookups = measure_lookups(cache, rounds, progress=progress)
    finally:
        cache.close()
    fill = measure_fill(embedding, sizes, queries, ef_search=ef_search, progress=progress)
    durable = measure_durable_puts(embedding, durable_puts)
    return BenchReport(lookups, fill, durable, environment(embedding))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def format_report(report: BenchReport) -> str:
    """The Markdown tables ``semcache bench`` prints.

    Targets are judged on CPU time (the cost of a call); wall-clock figures
    sit beside them and match on an idle machine.
    """
    look = report.lookups
    embed = look.embed
    lines = [
        "| operation | median ms | p90 ms | p99 ms | max ms | CPU median ms | CPU p99 ms "
        "| median / bare embedding (CPU; wall) | p99 / bare embedding (CPU; wall) | target (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = {"semantic lookup (embed + search + guard)": "semantic", "exact hit": "exact"}
    for name, timing in (
        ("bare embedding (model call, 1 text)", look.embed),
        ("semantic lookup (embed + search + guard)", look.semantic),
        ("exact hit", look.exact),
    ):
        ratio = timing.cpu.median / embed.cpu.median
        target = ""
        if name in checks:
            limit = TARGETS[checks[name]]
            target = f"<= {limit:.2f}x: {_verdict(ratio <= limit)}"
        lines.append(
            f"| {name} | {_ms(timing.wall.median)} | {_ms(timing.wall.p90)} | {_ms(timing.wall.p99)} "
            f"| {_ms(timing.wall.max)} | {_ms(timing.cpu.median)} | {_ms(timing.cpu.p99)} "
            f"| {ratio:.4f}x; {timing.wall.median / embed.wall.median:.4f}x "
            f"| {timing.cpu.p99 / embed.cpu.p99:.3f}x; {timing.wall.p99 / embed.wall.p99:.3f}x | {target} |"
        )
    lines.append(f"\nsemantic hits: {look.semantic_hits} of {look.semantic.wall.count} paraphrase lookups\n")

    fill = report.fill
    lines += [
        f"| search (top 3, ef_search {fill.ef_search}; store filled with random unit vectors) "
        "| median ms | p90 ms | p99 ms | max ms "
        "| CPU median ms | added over 1 entry (CPU; wall, medians) | target (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    largest = max(fill.search)
    for label, table in (("unrelated query", fill.search), ("paraphrase query", fill.near)):
        one = table[1]
        for size, timing in sorted(table.items()):
            added_cpu = timing.cpu.median - one.cpu.median
            added_wall = timing.wall.median - one.wall.median
            target = ""
            if size == largest and size >= 100_000:
                target = f"<= {TARGETS['search_ms']} ms: {_verdict(added_cpu * 1000 <= TARGETS['search_ms'])}"
            found = f" (own entry first: {fill.near_found[size]:.1%})" if table is fill.near else ""
            lines.append(
                f"| {size:,} entries, {label}{found} | {_ms(timing.wall.median)} | {_ms(timing.wall.p90)} "
                f"| {_ms(timing.wall.p99)} | {_ms(timing.wall.max)} | {_ms(timing.cpu.median)} "
                f"| {added_cpu * 1000:+.3f} ms; {added_wall * 1000:+.3f} ms | {target} |"
            )
    overhead = fill.bytes_per_entry - fill.payload_per_entry
    durable_wall, durable_cpu = report.durable_puts_per_second
    lines += [
        "",
        "| throughput and memory | value (wall clock; per CPU second) | target |",
        "|---|---|---|",
        f"| put, in memory (precomputed vector, filling to {fill.entries:,}) "
        f"| {fill.put_per_second:,.0f} /s; {fill.put_per_cpu_second:,.0f} /s | |",
        f"| put, with write-ahead log (precomputed vector) | {durable_wall:,.0f} /s; {durable_cpu:,.0f} /s | |",
        f"| memory per entry ({fill.entries:,} entries, RSS growth) | {fill.bytes_per_entry:,.0f} B "
        f"= {fill.payload_per_entry:,.0f} B payload + {overhead:,.0f} B | "
        f"<= {TARGETS['bytes_per_entry']:,} B + payload: {_verdict(overhead <= TARGETS['bytes_per_entry'])} |",
        "",
        "environment: " + "; ".join(f"{k} {v}" for k, v in report.environment.items()),
    ]
    return "\n".join(lines)
