"""Shared fixtures.  The real model loads offline from the packaged copy."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The labelled pairs are read from an explicit folder: the shared data beside this checkout.
os.environ.setdefault("SEMCACHE_DATA", str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from semcache.embeddings import HashEmbedding, SentenceTransformerEmbedding  # noqa: E402


@pytest.fixture
def hash_embedding() -> HashEmbedding:
    """Deterministic, fast: for unit tests that do not judge meaning."""
    return HashEmbedding(dim=64)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedding:
    """The real all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedding()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that load the real model are slow too: ``pytest -m "not slow"`` is the quick inner loop."""
    for item in items:
        if item.get_closest_marker("model") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def clock():
    """A hand-moved clock (milliseconds), shared by the tests of TTLs and memos."""
    from support.clocks import Clock

    return Clock()


@pytest.fixture
def make_cache(clock):
    """``make_cache(**settings)``: a SemanticCache over an in-memory store with the 64-dim hash embedder and the
    hand-moved clock (closed after the test); the one way tests build a cache that does not judge meaning."""
    from semcache import SemanticCache, SemanticKV

    made: list[SemanticCache] = []

    def make(**settings) -> SemanticCache:
        backend = SemanticKV(embedding=HashEmbedding(dim=64), clock=clock, purge_interval=3600)
        made.append(SemanticCache(backend, **settings))
        return made[-1]

    yield make
    for cache in made:
        cache.close()
