"""The clock that stamps entries and decides expiry: the wall clock, but never in jumps.

TTLs are wall-clock times (``expires_at_ms``), decided by whoever issues the
commands: the embedded store, or a shard's leader.  If that machine's wall
clock jumped forward an hour (a bad NTP step, a VM resumed, an operator's
``date -s``), every entry with less than an hour left would expire at once,
and a cache would empty itself.  :class:`SteadyClock` follows the wall clock
but advances at most :data:`MAX_RATE` times as fast as a monotonic clock (plus
a little slack), so a forward jump is caught up gradually, and it never goes
back.  While it catches up, entries live up to the size of the jump longer
than their TTL; nothing expires early.

>>> wall, mono = [1_000_000], [0]
>>> clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
>>> clock()
1000000
>>> wall[0] += 3_600_000; mono[0] += 1_000       # the wall clock jumps an hour in one second
>>> clock() - 1_000_000 <= MAX_RATE * 1_000 + SLACK_MS
True
>>> wall[0] -= 7_200_000; mono[0] += 1_000       # and back two hours: time holds still
>>> clock() >= 1_000_000
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How much faster than real (monotonic) time the clock may run to catch a jump up, and the
# slack allowed on top: a wall clock slewed by NTP never reaches it.
MAX_RATE = 2
SLACK_MS = 1_000


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, as the system says (may jump)."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class SteadyClock:
    """Wall-clock milliseconds that move forward at most ``MAX_RATE`` times real time, and never back.

    Args:
        wall: the wall clock (ms since the epoch).
        monotonic: a monotonic clock (ms).
    """

    def __init__(self, wall: Callable[[], int] = wall_clock_ms, monotonic: Callable[[], int] = monotonic_ms) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last = wall()
        # Where the clock last agreed with the wall clock: a jump is caught up at MAX_RATE from there.
        self._anchor, self._anchor_monotonic = self._last, monotonic()

    def __call__(self) -> int:
        with self._lock:
            wall, mono = self._wall(), self._monotonic()
            allowed = self._anchor + MAX_RATE * max(0, mono - self._anchor_monotonic) + SLACK_MS
            if wall <= allowed:  # in step with the wall clock (or it went back): follow it, never back
                now = max(self._last, wall)
                self._anchor, self._anchor_monotonic = now, mono
            else:  # ahead of what real time allows: a jump, caught up gradually
                now = max(self._last, allowed)
            self._last = now
            return now
