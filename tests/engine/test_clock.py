"""A forward jump of the wall clock never expires the whole cache at once (the clock is steady)."""

from __future__ import annotations

from semcache import SemanticKV
from semcache._engine.clock import MAX_RATE, SLACK_MS, SteadyClock
from semcache.embeddings import HashEmbedding


def test_a_wall_clock_jump_is_caught_up_gradually_and_time_never_goes_back():
    wall, mono = [1_000_000], [0]
    clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock() == 1_000_000
    wall[0] += 86_400_000  # a day ahead, at once
    readings = []
    for _ in range(10):
        mono[0] += 1_000
        readings.append(clock())
    steps = [b - a for a, b in zip([1_000_000, *readings], readings, strict=False)]
    assert all(step > 0 for step in steps) and readings[-1] - 1_000_000 <= MAX_RATE * 10_000 + SLACK_MS
    for _ in range(1000):  # calls in quick succession do not add up their slack
        clock()
    assert clock() == readings[-1]
    wall[0] -= 90_000_000  # then far behind: held, never back
    mono[0] += 1_000
    assert clock() == readings[-1]
    wall[0], mono[0] = readings[-1] + 500, mono[0] + 1_000  # an ordinary second: followed exactly
    assert clock() == readings[-1] + 500


def test_entries_do_not_all_expire_when_the_wall_clock_jumps():
    wall, mono = [1_000_000], [0]
    clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    with SemanticKV(embedding=HashEmbedding(dim=16), clock=clock, purge_interval=3600) as kv:
        for n in range(10):
            kv.put(f"k{n}", f"value {n}", ttl_ms=600_000 + 60_000 * n)  # 10 to 19 minutes
        wall[0] += 86_400_000  # the machine's clock jumps a day
        mono[0] += 1_000
        assert kv.purge_expired() == 0 and len(kv) == 10
        for _ in range(420):  # seven minutes of real time: the steady clock advances at most 14 of the day
            mono[0] += 1_000
            kv.purge_expired()
        assert len(kv) == 5  # the 10- to 14-minute entries have expired, in their own order; not all at once
