"""Fixtures shared by the SemanticCache tests: a hand-moved clock and a cache over an embedded store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.clocks import Clock

from semcache import SemanticCache, SemanticKV
from semcache.embeddings import HashEmbedding


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock) -> Iterator[SemanticCache]:
    backend = SemanticKV(embedding=HashEmbedding(dim=64), clock=clock, purge_interval=3600)
    with SemanticCache(backend, threshold=0.7) as c:
        yield c
