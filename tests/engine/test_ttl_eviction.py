"""TTL (hidden at once, purged in the background) and capacity eviction (lru, lfu, ttl)."""

from __future__ import annotations

import time

import pytest
from support.clocks import Clock

from semcache import SemanticKV
from semcache._engine.eviction import AccessLog, choose_victims
from semcache._engine.state import Entry
from semcache.embeddings import HashEmbedding


def make_kv(clock: Clock, **kwargs) -> SemanticKV:
    kwargs.setdefault("purge_interval", 3600)
    return SemanticKV(embedding=HashEmbedding(dim=32), clock=clock, **kwargs)


def test_an_expired_entry_is_never_returned_even_before_it_is_purged():
    clock = Clock()
    with make_kv(clock) as kv:
        kv.put("short", "short lived answer", ttl_ms=100)
        kv.put("long", "long lived answer", ttl_ms=10_000)
        kv.put("forever", "forever answer")
        clock.advance(99)
        assert kv.get("short") == b"short lived answer"
        clock.advance(1)  # expires_at is inclusive: at created + ttl the entry is gone
        assert kv.get("short") is None
        assert not kv.exists("short")
        assert kv.scan("", 10) == ["forever", "long"]
        assert "short" not in [r.key for r in kv.search("short lived answer", top_k=3)]
        assert len(kv) == 3  # still stored, only hidden, until the purge
        assert kv.purge_expired() == 1
        assert len(kv) == 2 and kv.stats()["expired"] == 1


def test_expired_entries_are_purged_in_the_background():
    clock = Clock()
    with make_kv(clock, purge_interval=0.02) as kv:
        for i in range(50):
            kv.put(f"k{i}", f"value {i}", ttl_ms=10 if i % 2 else 0)
        clock.advance(11)
        deadline = time.monotonic() + 30  # a bound, not a speed assertion
        while len(kv) > 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(kv) == 25
        assert kv.stats()["expired"] == 25
        assert all(int(key[1:]) % 2 == 0 for key in kv.scan("", 100))


def test_re_putting_without_ttl_cancels_the_old_expiry():
    clock = Clock()
    with make_kv(clock) as kv:
        kv.put("k", "first", ttl_ms=5)
        kv.put("k", "second")
        clock.advance(100)
        assert kv.purge_expired() == 0
        assert kv.get("k") == b"second"


def test_ttls_survive_a_restart(tmp_path):
    clock = Clock()
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=32), clock=clock, purge_interval=3600) as kv:
        kv.put("soon", "goes away", ttl_ms=50)
        kv.put("kept", "stays")
    clock.advance(60)
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=32), clock=clock, purge_interval=3600) as kv:
        assert kv.get("soon") is None and kv.get("kept") == b"stays"
        assert kv.purge_expired() == 1


def fill(kv: SemanticKV, clock: Clock, count: int, ttl=lambda i: 0) -> None:
    for i in range(count):
        clock.advance(1)
        kv.put(f"k{i}", f"value number {i}", ttl_ms=ttl(i))


def test_lru_evicts_the_least_recently_used():
    clock = Clock()
    with make_kv(clock, capacity=10) as kv:
        fill(kv, clock, 10)
        for key in ("k0", "k1", "k2"):  # reading makes these the most recently used
            clock.advance(1)
            assert kv.get(key) is not None
        clock.advance(1)
        kv.put("new", "a new value")
        assert len(kv) == 10
        assert kv.get("k3") is None  # the oldest untouched entry went
        assert all(kv.exists(key) for key in ("k0", "k1", "k2", "new"))
        assert kv.stats()["evicted"] == 1


def test_search_hits_count_as_use_for_lru():
    clock = Clock()
    with make_kv(clock, capacity=5) as kv:
        fill(kv, clock, 5)
        clock.advance(1)
        assert kv.search("value number 0", top_k=1)[0].key == "k0"
        clock.advance(1)
        kv.put("new", "something else")
        assert kv.exists("k0") and not kv.exists("k1")


def test_lfu_evicts_the_least_frequently_read():
    clock = Clock()
    with make_kv(clock, capacity=5, eviction="lfu") as kv:
        fill(kv, clock, 5)
        for key, reads in (("k0", 3), ("k1", 1), ("k3", 2), ("k4", 5)):
            for _ in range(reads):
                clock.advance(1)
                kv.get(key)
        clock.advance(1)
        kv.put("new", "another")
        assert not kv.exists("k2")  # never read
        clock.advance(1)
        kv.put("newer", "yet another")
        # "new" (1 touch, at put) and "k1" (2 touches) remain candidates: "new" has fewer.
        assert not kv.exists("new") and kv.exists("k1")


def test_ttl_policy_evicts_the_soonest_to_expire_and_untimed_entries_last():
    clock = Clock()
    with make_kv(clock, capacity=6, eviction="ttl") as kv:
        fill(kv, clock, 6, ttl=lambda i: {0: 0, 1: 5_000, 2: 500, 3: 0, 4: 9_000, 5: 1_000}[i])
        clock.advance(1)
        kv.put("x1", "one more")  # no TTL
        assert not kv.exists("k2")
        clock.advance(1)
        kv.put("x2", "two more")
        assert not kv.exists("k5")
        for _ in range(3):
            clock.advance(1)
            kv.put(f"y{_}", "more")
        # Only now do untimed entries go, oldest first.
        assert not kv.exists("k0") and kv.exists("x2")


def test_eviction_removes_from_the_index_too_and_works_in_batches():
    clock = Clock()
    with make_kv(clock, capacity=200) as kv:
        fill(kv, clock, 201)
        # Over capacity by one: evicts down to 1 % under capacity at once.
        assert len(kv) == 198
        stats = kv.stats()
        assert stats["searchable"] == 198 and stats["evicted"] == 3
        assert all(r.key not in ("k0", "k1", "k2") for r in kv.search("value number 1", top_k=20))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("lru", ["c", "b", "a"]), ("lfu", ["c", "b", "a"]), ("ttl", ["c", "a", "b"])],
)
def test_choosing_victims_is_separate_from_applying_them(policy, expected):
    """The decision is a pure function of entries and the local access log."""
    entries = {
        "a": Entry(b"", "", None, created_at_ms=1, expires_at_ms=100),
        "b": Entry(b"", "", None, created_at_ms=2, expires_at_ms=0),
        "c": Entry(b"", "", None, created_at_ms=3, expires_at_ms=50),
    }
    log = AccessLog()
    log.touch("a", 10)
    log.touch("a", 11)
    log.touch("b", 5)
    log.touch("c", 4)  # c: read once, least recently
    log.touch("b", 6)
    assert choose_victims(policy, entries, log, 3) == expected
    assert choose_victims(policy, entries, log, 0) == []


def test_expired_entries_are_dropped_before_any_live_entry_is_evicted():
    clock = Clock()
    with make_kv(clock, capacity=6) as kv:
        fill(kv, clock, 3)  # k0..k2 live, the least recently used
        for i in range(3):
            clock.advance(1)
            kv.put(f"t{i}", f"temporary {i}", ttl_ms=5)
        clock.advance(10)  # t0..t2 expired, not yet purged
        kv.put("new", "one more")
        assert [kv.exists(k) for k in ("k0", "k1", "k2", "new")] == [True] * 4
        stats = kv.stats()
        assert (stats["entries"], stats["expired"], stats["evicted"]) == (4, 3, 0)


def test_the_access_log_forgets_every_key_that_leaves():
    """Regression: expired and cleared keys kept their access records forever (a leak in a TTL cache)."""
    clock = Clock()
    with make_kv(clock, capacity=50) as kv:
        for i in range(40):
            kv.put(f"t{i}", f"temporary {i}", ttl_ms=10)
            kv.get(f"t{i}")
        clock.advance(20)
        assert kv.purge_expired() == 40
        for i in range(30):
            kv.put(f"s{i}", f"scoped {i}", scope="tenant")
        kv.clear_scope("tenant")
        for i in range(60):  # 10 over capacity: evictions
            kv.put(f"e{i}", f"evictable {i}")
        kv.delete("e59")
        assert len(kv._housekeeping.access) == len(kv) <= 50
        kv.clear_all()
        assert len(kv._housekeeping.access) == 0


def test_refreshing_a_ttl_does_not_grow_the_expiry_heap_without_bound():
    clock = Clock()
    with make_kv(clock) as kv:
        for i in range(5_000):  # one hot key, its TTL refreshed on every write
            clock.advance(1)
            kv.put("hot", f"value {i}", ttl_ms=86_400_000)
        assert len(kv._housekeeping.expiries) <= 2 * len(kv) + 1024
        clock.advance(86_400_001)
        assert kv.purge_expired() == 1 and kv.get("hot") is None
