"""One search's work is bounded: a documented top_k limit, hnswlib never asked for more than it holds, no leak."""

from __future__ import annotations

import numpy as np
import pytest

from semcache import InvalidInputError, SemanticKV
from semcache._engine.index import VectorIndex
from semcache._engine.inputs import MAX_TOP_K
from semcache.embeddings import HashEmbedding

DIM = 16


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _exact(index_vectors: dict[int, np.ndarray], query: np.ndarray, k: int) -> list[int]:
    scores = {label: float(vector @ query) for label, vector in index_vectors.items()}
    return sorted(scores, key=lambda label: (-scores[label], label))[:k]


def test_top_k_over_the_limit_is_refused_at_the_call():
    with SemanticKV(embedding=HashEmbedding(dim=DIM)) as kv:
        kv.put("k", "text")
        with pytest.raises(InvalidInputError, match=f"top_k is {10**9}, over the limit of {MAX_TOP_K}"):
            kv.search("text", top_k=10**9)
        assert [r.key for r in kv.search("text", top_k=MAX_TOP_K)] == ["k"]


def test_the_largest_top_k_on_a_graph_with_many_deletions_returns_every_live_vector():
    index = VectorIndex(DIM, max_entries=64)
    vectors = _vectors(1500)
    labels = [index.add(vector) for vector in vectors]
    live = {label: vectors[n] for n, label in enumerate(labels)}
    for label in labels[:1400]:  # most of the graph deleted: hnswlib must not be asked for more than is left
        index.remove(label)
        del live[label]
    hits = index.search(vectors[-1], MAX_TOP_K)
    assert sorted(label for label, _ in hits) == sorted(live)


def test_when_hnswlib_cannot_gather_the_neighbours_an_exact_scan_answers(monkeypatch):
    index = VectorIndex(DIM, max_entries=64)
    vectors = _vectors(300, seed=1)
    labels = [index.add(vector) for vector in vectors]
    for label in labels[::3]:
        index.remove(label)
    live = {label: vectors[n] for n, label in enumerate(labels) if n % 3}

    class Failing:
        """hnswlib's index, but its searches fail as they do when the graph cannot gather k neighbours."""

        def __init__(self, real):
            self.real = real

        def knn_query(self, *args, **kwargs):
            raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(index, "_index", Failing(index._index))
    query = vectors[5]
    hits = index.search(query, 10)
    assert [label for label, _ in hits] == _exact(live, query, 10)
    assert hits[0][1] == pytest.approx(float(live[hits[0][0]] @ query), abs=1e-5)


def test_memory_stays_flat_across_searches_at_the_largest_top_k():
    """A leak of hnswlib's buffers (tens of MB a search when it raised) would show at once; small noise would not."""
    from benchmarks.embedded import rss_bytes

    index = VectorIndex(DIM, max_entries=64)
    vectors = _vectors(3000, seed=2)
    labels = [index.add(vector) for vector in vectors]
    for label in labels[:2500]:
        index.remove(label)
    for query in vectors[:50]:  # warm-up: allocator pools settle
        index.search(query, MAX_TOP_K)
    before = rss_bytes()
    for query in np.tile(vectors[:100], (5, 1)):
        assert len(index.search(query, MAX_TOP_K)) == 500
    assert rss_bytes() - before < 64 << 20
