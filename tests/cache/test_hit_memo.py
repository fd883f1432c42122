"""``SemanticCache.address`` / ``lookup_at`` and ``HitMemo``: a remembered exact hit is served only while the
backend holds the very bytes it was decoded from."""

from __future__ import annotations

import pytest

from semcache import SemanticCache
from semcache._cache.cache import HitMemo
from semcache._cache.lru import LRU
from semcache.errors import ConfigurationError, InvalidInputError

QUESTION = "What is the capital of France?"


def test_lookup_at_an_address_is_lookup(cache):
    cache.store(QUESTION, "Paris", scope={"model": "a"})
    address = cache.address(" What is the capital of  France? ", {"model": "a"})
    assert address.key == cache.key_for(QUESTION, {"model": "a"})
    assert address.normalized == QUESTION
    assert cache.lookup_at(address) == cache.lookup(address.prompt, scope={"model": "a"})
    assert cache.lookup_at(address).exact
    assert cache.lookup_at(cache.address("What's the capital of France?", {"model": "a"})).exact is False
    assert cache.lookup_at(cache.address(QUESTION, {"model": "b"})) is None
    assert (cache.stats.lookups, cache.stats.exact_hits, cache.stats.semantic_hits, cache.stats.misses) == (5, 3, 1, 1)


def test_address_rejects_bad_input_like_lookup(cache):
    with pytest.raises(InvalidInputError):
        cache.address("   ")
    with pytest.raises(InvalidInputError):
        cache.address(QUESTION, scope={"bad": object()})


def warm(cache: SemanticCache, address, memo: HitMemo):
    """Two lookups: the second decode of the same bytes is remembered."""
    seen_once = cache.lookup_at(address, memo=memo)
    assert seen_once is not None and not memo.remembers(seen_once)  # its caller's alone
    hit = cache.lookup_at(address, memo=memo)
    assert memo.remembers(hit)
    return hit


def test_memo_reuses_a_hit_only_while_its_bytes_are_stored(cache, clock):
    memo = HitMemo()
    address = cache.address(QUESTION)
    cache.store(QUESTION, "Paris")
    first = warm(cache, address, memo)
    assert cache.lookup_at(address, memo=memo) is first and cache.stats.exact_hits == 3
    cache.store(QUESTION, "Paris")  # the same answer again: a new record (its store time), a new hit
    again = cache.lookup_at(address, memo=memo)
    assert again is not first and again.response == "Paris" and not memo.remembers(first)
    cache.store(QUESTION, "Lyon")
    assert warm(cache, address, memo).response == "Lyon"
    SemanticCache(cache.backend).store(QUESTION, "Marseille")  # another writer, no shared memo
    assert warm(cache, address, memo).response == "Marseille"
    assert cache.delete(QUESTION)
    assert cache.lookup_at(address, memo=memo) is None
    cache.store(QUESTION, "Nice")
    warm(cache, address, memo)
    cache.clear()
    assert cache.lookup_at(address, memo=memo) is None
    cache.store(QUESTION, "Toulouse", ttl=1)
    assert warm(cache, address, memo).response == "Toulouse"
    clock.now += 1_001
    assert cache.lookup_at(address, memo=memo) is None


def test_memo_needs_the_same_normalised_prompt_not_only_the_key(cache):
    memo = HitMemo()
    cache.store(QUESTION, "Paris")
    address = cache.address(QUESTION)
    hit = warm(cache, address, memo)
    value = cache.backend.get(address.key)
    assert memo.get(address.key, address.normalized, value) is hit
    assert memo.get(address.key, "another prompt with the same key", value) is None


def test_memo_and_lru_are_bounded():
    memo = LRU[str, int](2)
    for i, key in enumerate("abc"):
        memo.put(key, i)
    assert len(memo) == 2 and memo.get("a") is None and memo.get("c") == 2
    memo.clear()
    assert len(memo) == 0
    for size in (0, -1, True, 1.5):
        with pytest.raises(ConfigurationError):
            HitMemo(size)  # type: ignore[arg-type]
