"""Shared plumbing for training and evaluation: cached encodings, sides, candidate feature tables.

Not needed at inference (that is :mod:`features` + :mod:`model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)
from encoding_cache import EncodedStore, encode_cached
from paths import CACHE
from sim import CacheRead, read_as_cache

from semcache._cache.cache import normalize_prompt
from semcache._cache.guard import conflict
from semcache._cache.verifier.features import Side, TokenCodec, context_features, make_side, pair_features
from semcache._quality import pairs as pairsets

SETS = ("llm", "gptcache", "qqp", "mrpc", "paws")


class Encodings:
    """Sentence and token encodings of every text of every set (cache/public.npz + cache/llm.npz)."""

    def __init__(self) -> None:
        os.makedirs(CACHE, exist_ok=True)
        llm_texts = [normalize_prompt(x) for p in pairsets.load("llm") for x in (p.first, p.second)]
        self.stores = [EncodedStore.load(str(CACHE / "public.npz")),
                       encode_cached(llm_texts, str(CACHE / "llm.npz"))]

    def _store(self, text: str) -> EncodedStore:
        for s in self.stores:
            if text in s.index:
                return s
        raise KeyError(text)

    def sentence(self, text: str) -> np.ndarray:
        s = self._store(text)
        return s.sentence[s.index[text]]

    def tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        e = self._store(text).get(text)
        return e.tokens, e.ids


@dataclass
class Table:
    """Candidate rows of one set/split read as a cache.

    ``q`` query index, ``rank`` candidate rank (0..k-1; -1 = the labelled pair added
    for training when its first text is not among the candidates), ``y`` 1 if serving
    it is a right hit, ``X`` features (``features.ALL_NAMES``), ``guard`` the hit guard's veto (rank 0 only
    meaningful), ``nbytes`` stored bytes of the candidate entry.
    """

    read: CacheRead
    q: np.ndarray
    rank: np.ndarray
    y: np.ndarray
    X: np.ndarray
    guard: np.ndarray
    nbytes: np.ndarray

    def matrix(self, values: np.ndarray, fill: float = -np.inf) -> np.ndarray:
        """(queries, k) matrix of per-row ``values`` (rows with rank >= 0)."""
        k = self.read.neighbours.shape[1]
        out = np.full((len(self.read.pairs), k), fill, dtype=np.float64)
        m = self.rank >= 0
        out[self.q[m], self.rank[m]] = values[m]
        return out


class SideCache:
    """Sides (store-time entry data, lookup-time query data) for texts, under one codec and weight table."""

    def __init__(self, enc: Encodings, codec: TokenCodec, weights: np.ndarray) -> None:
        self.enc, self.codec, self.weights = enc, codec, weights
        self._entry: dict[str, Side] = {}
        self._query: dict[str, Side] = {}

    def entry(self, text: str) -> Side:
        if text not in self._entry:
            tok, ids = self.enc.tokens(text)
            self._entry[text] = make_side(text, tok, ids, self.weights, self.codec, stored=True)
        return self._entry[text]

    def query(self, text: str) -> Side:
        if text not in self._query:
            tok, ids = self.enc.tokens(text)
            self._query[text] = make_side(text, tok, ids, self.weights, self.codec, stored=False)
        return self._query[text]


def table(name: str, split_pairs, enc: Encodings, sides: SideCache, k: int = 5, *, add_pair: bool = False,
          floor: float = 0.0) -> Table:
    """Features of every (query, candidate) of ``split_pairs`` read as a cache (candidates with cos >= floor)."""
    read = read_as_cache(name, split_pairs, enc.sentence, k)
    slot = {t: i for i, t in enumerate(read.entries)}
    qs, ranks, ys, xs, gs, nb = [], [], [], [], [], []
    for i, p in enumerate(read.pairs):
        if read.exact[i] >= 0:
            continue
        qt = normalize_prompt(p.second)
        qside = sides.query(qt)
        own = slot[normalize_prompt(p.first)]
        seen_own = False
        for r, (e, c) in enumerate(zip(read.neighbours[i].tolist(), read.sims[i].tolist(), strict=True)):
            if c < floor:
                break
            eside = sides.entry(read.entries[e])
            qs.append(i)
            ranks.append(r)
            ys.append(bool(read.right[i, r]))
            xs.append(np.concatenate([pair_features(c, eside, qside), context_features(read.sims[i].tolist(), r)]))
            gs.append(conflict(read.entries[e], qt) is not None if r == 0 else False)
            nb.append(eside.stored_bytes)
            seen_own |= e == own
        if add_pair and not seen_own:
            ft = read.entries[own]
            c = float(enc.sentence(ft) @ enc.sentence(qt))
            s0 = float(read.sims[i, 0])
            ctx = [3.0, s0 - c, c, 0.0]  # as if ranked below every searched candidate
            qs.append(i)
            ranks.append(-1)
            ys.append(p.positive)
            xs.append(np.concatenate([pair_features(c, sides.entry(ft), qside), ctx]))
            gs.append(False)
            nb.append(0)
    return Table(read, np.array(qs, dtype=np.int64), np.array(ranks, dtype=np.int64), np.array(ys, dtype=bool),
                 np.stack(xs) if xs else np.zeros((0, 1), np.float32), np.array(gs, dtype=bool),
                 np.array(nb, dtype=np.int64))
