"""Lookup latency against the bare model call, measured interleaved: the demo's figures (and the benchmark's).

>>> Summary.of([0.001, 0.002, 0.003]).median
0.002
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from semcache._cache.cache import SemanticCache
from semcache.embeddings import BaseEmbedding

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
