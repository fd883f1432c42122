"""Read a labelled pair set *as a cache* (as /work/shared/data/README.md and semcache's calibrate do) and count hits.

Every first text is cached (deduplicated by normalised text; an entry's answers are
the ids of the pairs that stored it), every second text is looked up:

1. a query whose normalised text equals a cached prompt is an exact hit on it;
2. otherwise the ``k`` nearest cached prompts (exact cosine over ALL entries) are
   the candidates, and a policy decides which one, if any, is served.

A served entry holding the pair's own id on a duplicate pair is a right hit; any
other hit is wrong; no hit is a miss.  right rate = right / duplicate pairs,
wrong rate = wrong / all queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)

from semcache._cache.cache import normalize_prompt
from semcache._quality.pairs import Pair


@dataclass
class CacheRead:
    """One set (one split) read as a cache.

    Attributes:
        pairs: the pairs, in order (query i is ``pairs[i].second``).
        entries: normalised cached texts.
        answers: per entry, the ids of the pairs that stored it.
        exact: per query, the entry its normalised text equals, else -1.
        neighbours, sims: (q, k) nearest entries and cosines, best first.
        right: (q, k) bool, serving that candidate would be a right hit.
    """

    name: str
    pairs: tuple[Pair, ...]
    entries: list[str]
    answers: list[frozenset[str]]
    exact: np.ndarray
    neighbours: np.ndarray
    sims: np.ndarray
    right: np.ndarray

    @property
    def positives(self) -> int:
        return sum(p.positive for p in self.pairs)

    def exact_right(self) -> np.ndarray:
        """(q,) bool: the exact hit (if any) is right."""
        pairs = zip(self.pairs, self.exact, strict=True)
        return np.array([e >= 0 and p.positive and p.id in self.answers[e] for p, e in pairs], dtype=bool)


def nearest(entries: np.ndarray, queries: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of each query among unit-length ``entries``, best first."""
    k = min(k, len(entries))
    idx = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ entries.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(entries) else \
            np.tile(np.arange(len(entries)), (len(scores), 1))
        ts = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-ts, axis=1, kind="stable")
        idx[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(ts, order, axis=1)
    return idx, sims


def read_as_cache(name: str, pairs: Sequence[Pair], sentence_of, k: int = 5) -> CacheRead:
    """``sentence_of(normalised text) -> unit vector``; ``k`` candidates per query."""
    slot: dict[str, int] = {}
    entries: list[str] = []
    answers: list[set[str]] = []
    for p in pairs:
        t = normalize_prompt(p.first)
        if t not in slot:
            slot[t] = len(entries)
            entries.append(t)
            answers.append(set())
        answers[slot[t]].add(p.id)
    queries = [normalize_prompt(p.second) for p in pairs]
    em = np.stack([sentence_of(t) for t in entries]).astype(np.float32)
    qm = np.stack([sentence_of(t) for t in queries]).astype(np.float32)
    nb, sims = nearest(em, qm, k)
    exact = np.array([slot.get(t, -1) for t in queries], dtype=np.int64)
    rows = zip(pairs, nb.tolist(), strict=True)
    right = np.array([[p.positive and p.id in answers[e] for e in row] for p, row in rows], dtype=bool)
    return CacheRead(name, tuple(pairs), entries, [frozenset(a) for a in answers], exact, nb, sims, right)


@dataclass(frozen=True)
class Rates:
    queries: int
    positives: int
    right: int
    wrong: int

    @property
    def misses(self) -> int:
        return self.queries - self.right - self.wrong

    @property
    def right_rate(self) -> float:
        return self.right / self.positives if self.positives else 0.0

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.queries if self.queries else 0.0


def outcome(read: CacheRead, choice: np.ndarray) -> Rates:
    """Rates when query i is served candidate ``choice[i]`` (a rank in 0..k-1, or -1 for a miss); exact hits first."""
    q = len(read.pairs)
    rows = np.arange(q)
    served_sem = choice >= 0
    right_sem = served_sem & read.right[rows, np.maximum(choice, 0)]
    ex = read.exact >= 0
    ex_right = read.exact_right()
    right = int((ex & ex_right).sum() + (~ex & right_sem).sum())
    hits = int(ex.sum() + (~ex & served_sem).sum())
    return Rates(q, read.positives, right, hits - right)


def choose(scores: np.ndarray, allowed: np.ndarray, threshold: float, rule: str = "best") -> np.ndarray:
    """Per query, the rank served: among ``allowed`` candidates with ``scores >= threshold``,
    the best-scoring one (``rule="best"``) or the nearest one (``rule="first"``); -1 for none."""
    ok = allowed & (scores >= threshold)
    pick = ok.argmax(axis=1) if rule == "first" else np.where(ok, scores, -np.inf).argmax(axis=1)
    return np.where(ok.any(axis=1), pick, -1)


def cosine_choice(read: CacheRead, threshold: float) -> np.ndarray:
    """Plain cosine: the nearest entry if its cosine >= threshold."""
    return np.where(read.sims[:, 0] >= np.float32(threshold), 0, -1)
