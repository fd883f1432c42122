"""The embedded benchmark behind ``semcache bench --embedded``.

Every figure is set against a baseline measured in the same run, so the
ratios hold on any machine:

* **semantic lookup** (embed + search + guard, the model memo disabled) against
  the bare model call on the same text, measured interleaved;
* **exact hit** (normalise, hash, one dict read) against the same bare embedding;
* **put throughput** with precomputed vectors (the engine alone), in memory and
  with a write-ahead log;
* **search** at growing sizes, as time added over a 1-entry index, on two kinds
  of data: random unit vectors (HNSW's worst case: no structure at all) and
  real all-MiniLM-L6-v2 embeddings of prompt-like texts built from
  ``../shared/data`` (see :mod:`benchmarks.prompts`), the latter with the
  recall of the top result against an exact search and a sweep of ``ef_search``;
* **memory per entry**: resident-set growth over the fill, per entry, minus the
  key and value bytes.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.prompts import PromptCorpus, build_corpus, embed_cached
from semcache._cache.cache import DEFAULT_THRESHOLD, SemanticCache
from semcache._cli.latency import LookupTimes, Timer, Timing, measure_lookups
from semcache._engine.backend import SearchResult
from semcache._engine.index import IndexSettings
from semcache._engine.kv import SemanticKV
from semcache._quality.calibrate import load_datasets, nearest
from semcache.embeddings import BaseEmbedding
from semcache.errors import InvalidInputError

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
SWEEP_EF_SEARCH = (16, 32, 48, 64, 128)  # the ef_search values tried on real prompts at the largest size
# What an ef_search must keep to count as good enough for a cache: recall@1 against an exact
# search on the queries that can hit (paraphrases), and no cache answer different from an
# exact search's.  Top-1 recall on held-out queries is shown but not required: missing their
# true nearest neighbour changes no answer when it lies below the threshold anyway.
MIN_RECALL = 0.99
SIMILARITY_TIE = 1e-5  # hnswlib and numpy round cosine similarity differently; closer than this is a tie

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
class PutStats:
    """Puts made by :func:`fill_stages`: count, time spent (wall and CPU) and payload bytes."""

    puts: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    payload: int = 0


def entry_key(prefix: str, row: int) -> str:
    """The key of the ``row``-th filled entry: ``prefix:000000042``."""
    return f"{prefix}:{row:09d}"


def fill_stages(
    kv: SemanticKV,
    sizes: Iterable[int],
    rows: Callable[[int, int], np.ndarray],
    *,
    prefix: str,
    value: bytes,
    stats: PutStats,
    bar: Any = None,
) -> Iterator[int]:
    """Fill ``kv`` up to 1 entry, then to each size in turn, yielding each size once it is reached.

    ``rows(start, count)`` gives the vectors of entries ``start .. start + count``;
    they are fetched a chunk at a time, so vectors made on the fly do not count
    as the store's memory.
    """
    for target in sorted({1, *sizes}):
        while stats.puts < target:
            batch = rows(stats.puts, min(FILL_CHUNK, target - stats.puts))
            start, start_cpu = time.perf_counter(), time.process_time()
            for row in range(len(batch)):
                key = entry_key(prefix, stats.puts + row)
                kv.put(key, value, vector=batch[row])
                stats.payload += len(key) + len(value)
            stats.seconds += time.perf_counter() - start
            stats.cpu_seconds += time.process_time() - start_cpu
            stats.puts += len(batch)
            if bar is not None:
                bar.update(len(batch))
        settle(kv)
        yield target


def settle(kv: SemanticKV) -> int:
    """Index every vector whose hnswlib insert is deferred, so searches time the graph alone.

    A store with an index backlog (see :mod:`semcache._engine.index`) scans queued
    vectors exactly; a benchmark of the graph must not time that scan.
    Returns how many deferred calls ran.
    """
    state = kv._state  # no public knob: the embedded store itself indexes eagerly by default
    return state.index_pending(state.queued_index_ops) if state.queued_index_ops else 0


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar on stderr, or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="entry", unit_scale=True)


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
    kept: list[tuple[str, np.ndarray]] = []  # a few stored entries per chunk, to make paraphrase-like queries

    def random_rows(start: int, count: int) -> np.ndarray:
        batch = unit_vectors(rng, count, embedding.dim)
        kept.extend((entry_key("bench", start + row), batch[row].copy()) for row in range(min(8, count)))
        return batch

    search: dict[int, Timing] = {}
    near: dict[int, Timing] = {}
    near_found: dict[int, float] = {}
    stats = PutStats()
    bar = progress_bar(progress, largest, "fill (random vectors)")
    before = rss_bytes()
    with SemanticKV(embedding=embedding, max_entries=largest, ef_search=ef_search, purge_interval=3600) as kv:
        for target in fill_stages(kv, sizes, random_rows, prefix="bench", value=value, stats=stats, bar=bar):
            search[target], _ = _time_searches(kv, query_vectors)
            picked = [kept[i] for i in rng.integers(0, len(kept), queries)]
            moved = np.stack([vector for _, vector in picked])
            near[target], tops = _time_searches(kv, moved + rng.normal(0, 0.01, moved.shape).astype(np.float32))
            near_found[target] = (
                sum(top is not None and key == top.key for (key, _), top in zip(picked, tops, strict=True)) / queries
            )
        grown = rss_bytes() - before
    if bar is not None:
        bar.close()
    return FillResult(
        search,
        near,
        near_found,
        ef_search,
        stats.puts / stats.seconds,
        stats.puts / stats.cpu_seconds,
        grown / stats.puts,
        stats.payload / stats.puts,
        stats.puts,
    )


def _time_searches(kv: SemanticKV, vectors: np.ndarray) -> tuple[Timing, list[SearchResult | None]]:
    """Time ``search(top_k=3)`` for each vector; also return each top result."""
    timer = Timer()
    tops: list[SearchResult | None] = []
    for vector in vectors:
        results = timer(lambda v=vector: kv.search(None, 3, vector=v))  # type: ignore[misc]
        tops.append(results[0] if results else None)
    return timer.timing(), tops


# ------------------------------------------------------------ real prompts
@dataclass(frozen=True)
class SearchQuality:
    """How good each query's top result was, against an exact (brute-force) search of the same store.

    Attributes:
        recall_at_1: share of queries whose top result is as near as the exact nearest (a tie counts).
        served_differently: share of queries a cache at the threshold would answer differently
            from an exact search: a hit instead of a miss or back, or a hit on a less similar entry.
        partner_first: paraphrase queries only: share whose stored partner came first.
        partner_first_exact: the same share for an exact search: what the data allows.
    """

    recall_at_1: float
    served_differently: float = 0.0
    partner_first: float | None = None
    partner_first_exact: float | None = None


@dataclass(frozen=True)
class SearchRow:
    """Latency and quality of one query set at one size."""

    timing: Timing
    quality: SearchQuality


def judge(
    tops: Sequence[SearchResult | None],
    queries: np.ndarray,
    stored: np.ndarray,
    partners: Sequence[int] | None = None,
    *,
    prefix: str = "prompt",
    threshold: float = DEFAULT_THRESHOLD,
) -> SearchQuality:
    """Score the top results of ``queries`` against an exact search of ``stored`` (unit rows).

    Args:
        tops: the store's top result per query (None: nothing found).
        partners: per query, the row of its stored partner (paraphrase queries).
        prefix: the key prefix of the stored entries (see :func:`entry_key`).
        threshold: the cache's similarity threshold, for ``served_differently``.

    >>> stored = np.eye(3, dtype=np.float32)
    >>> hit = SearchResult(entry_key("prompt", 1), b"", 1.0, "local")
    >>> judge([hit, None], stored[[1, 2]], stored, [1, 2])
    SearchQuality(recall_at_1=0.5, served_differently=0.5, partner_first=0.5, partner_first_exact=1.0)
    """
    _, best = nearest(stored, queries, 1, chunk=64)
    exact = best[:, 0].astype(np.float64)
    found = np.array([-math.inf if top is None else top.similarity for top in tops])
    as_near = found >= exact - SIMILARITY_TIE
    recall = float(np.mean(as_near))
    # Top-1 serving: a hit is the nearest entry at or above the threshold.
    differently = float(np.mean(((found >= threshold) != (exact >= threshold)) | ((exact >= threshold) & ~as_near)))
    if partners is None:
        return SearchQuality(recall, differently)
    rows = np.asarray(partners, dtype=np.int64)
    partner = np.einsum("ij,ij->i", queries, stored[rows]).astype(np.float64)
    keys = [entry_key(prefix, row) for row in rows.tolist()]
    first = [
        top is not None and (top.key == key or abs(top.similarity - sim) <= SIMILARITY_TIE)
        for top, key, sim in zip(tops, keys, partner.tolist(), strict=True)
    ]
    return SearchQuality(
        recall, differently, float(np.mean(first)), float(np.mean(exact <= partner + SIMILARITY_TIE))
    )


@dataclass
class PromptSearch:
    """Search on real prompt embeddings: per size, per query set, and the ``ef_search`` sweep.

    Attributes:
        unrelated, paraphrase: per size (1 included), latency and quality.
        sweep: at the largest size, per ``ef_search``: (unrelated, paraphrase).
        originals: stored texts taken from the data as they are (the rest are composed).
        paraphrase_pairs: distinct paraphrase queries (pairs) at the largest size.
    """

    unrelated: dict[int, SearchRow]
    paraphrase: dict[int, SearchRow]
    sweep: dict[int, tuple[SearchRow, SearchRow]]
    ef_search: int
    entries: int
    originals: int
    paraphrase_pairs: int
    unrelated_queries: int
    put_per_second: float


def measure_prompt_search(
    embedding: BaseEmbedding,
    corpus: PromptCorpus,
    vectors: np.ndarray,
    sizes: Sequence[int],
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
    sweep: Sequence[int] = SWEEP_EF_SEARCH,
    progress: bool = False,
) -> PromptSearch:
    """Fill a store with real prompt embeddings, timing and judging search at 1 entry and each size.

    ``vectors`` holds the embeddings of ``corpus.texts()``, in that order.
    Paraphrase queries at a size are those whose partner is stored by then,
    repeated in turn to ``len(corpus.paraphrases)`` queries (one at size 1).
    """
    stored_count = len(corpus.stored)
    if vectors.shape != (len(corpus.texts()), embedding.dim):
        raise InvalidInputError(f"vectors {vectors.shape} do not match the corpus ({len(corpus.texts())} texts)")
    if max(sizes) > stored_count:
        raise InvalidInputError(f"the corpus stores {stored_count} texts; sizes go up to {max(sizes)}")
    stored = vectors[:stored_count]
    paraphrase_vectors = vectors[stored_count : stored_count + len(corpus.paraphrases)]
    unrelated_vectors = vectors[stored_count + len(corpus.paraphrases) :]
    entries = np.array([pair.entry for pair in corpus.paraphrases], dtype=np.int64)
    largest = max(sizes)
    value = b"a" * PAYLOAD_BYTES

    def measure(kv: SemanticKV, size: int) -> tuple[SearchRow, SearchRow]:
        timing, tops = _time_searches(kv, unrelated_vectors)
        unrelated = SearchRow(timing, judge(tops, unrelated_vectors, stored[:size]))
        usable = np.flatnonzero(entries < size)
        picked = usable[np.arange(len(entries)) % len(usable)]
        queries = paraphrase_vectors[picked]
        timing, tops = _time_searches(kv, queries)
        paraphrase = SearchRow(timing, judge(tops, queries, stored[:size], entries[picked].tolist()))
        return unrelated, paraphrase

    unrelated: dict[int, SearchRow] = {}
    paraphrase: dict[int, SearchRow] = {}
    results: dict[int, tuple[SearchRow, SearchRow]] = {}
    stats = PutStats()
    bar = progress_bar(progress, largest, "fill (real prompts)")

    def stored_rows(start: int, count: int) -> np.ndarray:
        return stored[start : start + count]

    with SemanticKV(embedding=embedding, max_entries=largest, ef_search=ef_search, purge_interval=3600) as kv:
        for size in fill_stages(kv, sizes, stored_rows, prefix="prompt", value=value, stats=stats, bar=bar):
            unrelated[size], paraphrase[size] = measure(kv, size)
        if bar is not None:
            bar.close()
        for ef in sweep:
            kv.set_ef_search(ef)
            results[ef] = measure(kv, largest)
        kv.set_ef_search(ef_search)
    return PromptSearch(
        unrelated,
        paraphrase,
        results,
        ef_search,
        stats.puts,
        min(corpus.originals, stats.puts),
        int(np.sum(entries < largest)),
        len(unrelated_vectors),
        stats.puts / stats.seconds,
    )


@dataclass
class PromptOutcome:
    """The real-prompt measurement, or why it was left out."""

    result: PromptSearch | None
    note: str


def run_prompt_search(
    embedding: BaseEmbedding,
    sizes: Sequence[int],
    queries: int,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> PromptOutcome:
    """Build the corpus from ``data_dir``, embed it (or read it from ``cache_dir``) and measure.

    A missing data folder or file leaves the measurement out, with the reason as the note.
    """
    try:
        datasets = load_datasets(data_dir)
    except InvalidInputError as exc:
        note = f"real prompt embeddings left out: {exc}"
        log(note)
        return PromptOutcome(None, note)
    corpus = build_corpus(datasets, max(sizes), queries)
    started = time.perf_counter()
    vectors = embed_cached(embedding, corpus.texts(), cache_dir=cache_dir, progress=progress, log=log)
    note = f"embeddings of {len(corpus.texts()):,} texts ready in {time.perf_counter() - started:.0f} s"
    result = measure_prompt_search(embedding, corpus, vectors, sizes, ef_search=ef_search, progress=progress)
    return PromptOutcome(result, note)


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
    prompts: PromptOutcome | None = None  # None: not asked for


def environment(embedding: BaseEmbedding) -> dict[str, str]:
    """Hardware and library versions, for the table's footer."""
    import hnswlib  # noqa: F401 - imported for its version below
    import sentence_transformers
    import torch

    from semcache import __version__

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
    prompts: bool = True,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    """Run every measurement; ``embedding`` should have ``memo_size=0``.

    Args:
        prompts: also measure search on real prompt embeddings (see :func:`run_prompt_search`).
        data_dir: the labelled data (default ``../shared/data``).
        cache_dir: where the prompt embeddings are cached (None: embed, keep nothing).
        log: receives progress notes (data left out, cache used).
    """
    cache = SemanticCache(SemanticKV(embedding=embedding, purge_interval=3600))
    try:
        lookups = measure_lookups(cache, rounds, progress=progress)
    finally:
        cache.close()
    fill = measure_fill(embedding, sizes, queries, ef_search=ef_search, progress=progress)
    outcome = None
    if prompts:
        outcome = run_prompt_search(
            embedding,
            sizes,
            queries,
            data_dir=data_dir,
            cache_dir=cache_dir,
            ef_search=ef_search,
            progress=progress,
            log=log,
        )
    durable = measure_durable_puts(embedding, durable_puts)
    return BenchReport(lookups, fill, durable, environment(embedding), outcome)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _added_ms(timing: Timing, one: Timing) -> float:
    """CPU milliseconds added over the 1-entry search (medians)."""
    return (timing.cpu.median - one.cpu.median) * 1000


def _search_target(size: int, largest: int, added_ms: float) -> str:
    """The verdict cell: only for the largest size, and only when it reaches 100K."""
    if size != largest or size < 100_000:
        return ""
    return f"<= {TARGETS['search_ms']} ms: {_verdict(added_ms <= TARGETS['search_ms'])}"


def _search_cells(size: int, timing: Timing, one: Timing, largest: int) -> str:
    """Latency cells of a search row: wall percentiles, CPU median, time added over 1 entry, verdict."""
    added_cpu = _added_ms(timing, one)
    added_wall = (timing.wall.median - one.wall.median) * 1000
    return (
        f"{_ms(timing.wall.median)} | {_ms(timing.wall.p90)} | {_ms(timing.wall.p99)} | {_ms(timing.wall.max)} "
        f"| {_ms(timing.cpu.median)} | {added_cpu:+.3f} ms; {added_wall:+.3f} ms "
        f"| {_search_target(size, largest, added_cpu)}"
    )


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def format_prompts(outcome: PromptOutcome) -> list[str]:
    """The real-prompt search table and the ``ef_search`` sweep, or the note saying why they are absent."""
    found = outcome.result
    if found is None:
        return [outcome.note]
    largest = max(found.unrelated)
    lines = [
        f"| search (top 3, ef_search {found.ef_search}; real all-MiniLM-L6-v2 embeddings of prompt-like texts) "
        "| median ms | p90 ms | p99 ms | max ms | CPU median ms | added over 1 entry (CPU; wall, medians) "
        "| target (CPU) | top-1 recall vs exact search "
        f"| answered differently from exact search at threshold {DEFAULT_THRESHOLD} "
        "| partner first (HNSW; exact search) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, table in (("held-out prompt", found.unrelated), ("paraphrase prompt", found.paraphrase)):
        one = table[1].timing
        for size, row in sorted(table.items()):
            quality = row.quality
            partner = ""
            if quality.partner_first is not None:
                partner = f"{_share(quality.partner_first)}; {_share(quality.partner_first_exact)}"
            lines.append(
                f"| {size:,} entries, {label} | {_search_cells(size, row.timing, one, largest)} "
                f"| {quality.recall_at_1:.1%} | {quality.served_differently:.1%} | {partner} |"
            )
    composed = found.entries - found.originals
    lines += [
        "",
        f"stored: {found.entries:,} distinct texts = {found.originals:,} sentences of ../shared/data "
        f"+ {composed:,} composed from two of them; queries: {found.paraphrase_pairs:,} paraphrases "
        f"(the second text of a duplicate pair whose first text is stored) and {found.unrelated_queries:,} "
        "held-out texts (neither they nor their pair partners are stored); "
        f"put {found.put_per_second:,.0f} /s (wall) while filling; {outcome.note}",
        "",
        f"| ef_search (real prompts, {largest:,} entries) | held-out: added CPU ms | held-out: top-1 recall "
        "| paraphrase: added CPU ms | paraphrase: top-1 recall | paraphrase: partner first "
        f"| answered differently at {DEFAULT_THRESHOLD} (held-out; paraphrase) "
        f"| <= {TARGETS['search_ms']} ms, paraphrase recall >= {MIN_RECALL:.0%}, no answer differs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    one_unrelated, one_paraphrase = found.unrelated[1].timing, found.paraphrase[1].timing
    for ef, (unrelated, paraphrase) in sorted(found.sweep.items()):
        added = (_added_ms(unrelated.timing, one_unrelated), _added_ms(paraphrase.timing, one_paraphrase))
        same_answers = unrelated.quality.served_differently == paraphrase.quality.served_differently == 0
        good = max(added) <= TARGETS["search_ms"] and paraphrase.quality.recall_at_1 >= MIN_RECALL and same_answers
        verdict = _verdict(good) if largest >= 100_000 else ""
        lines.append(
            f"| {ef}{' (this run)' if ef == found.ef_search else ''} | {added[0]:+.3f} "
            f"| {unrelated.quality.recall_at_1:.1%} | {added[1]:+.3f} | {paraphrase.quality.recall_at_1:.1%} "
            f"| {_share(paraphrase.quality.partner_first)} "
            f"| {unrelated.quality.served_differently:.1%}; {paraphrase.quality.served_differently:.1%} | {verdict} |"
        )
    return lines


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
    largest = max(fill.search)
    lines += [
        f"| search (top 3, ef_search {fill.ef_search}; random unit vectors: the worst case, no structure) "
        "| median ms | p90 ms | p99 ms | max ms "
        "| CPU median ms | added over 1 entry (CPU; wall, medians) | target (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, table in (("unrelated query", fill.search), ("paraphrase query", fill.near)):
        for size, timing in sorted(table.items()):
            found = f" (own entry first: {fill.near_found[size]:.1%})" if table is fill.near else ""
            lines.append(f"| {size:,} entries, {label}{found} | {_search_cells(size, timing, table[1], largest)} |")
    if report.prompts is not None:
        lines += ["", *format_prompts(report.prompts)]
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
