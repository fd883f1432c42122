"""Fixtures shared by the SemanticCache tests: a hand-moved clock and a cache over an embedded store."""

from __future__ import annotations

import pytest

from semcache import SemanticCache


@pytest.fixture
def cache(make_cache) -> SemanticCache:
    return make_cache(threshold=0.7)
