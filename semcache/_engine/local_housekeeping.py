"""The embedded store's expiry and eviction: its own records around the shared driver, and the purge thread.

What leaves, and the commands that remove it, are decided by the driver shared
with the Raft leader (:mod:`semcache._engine.housekeeping`).  What the embedded
store keeps for it is its own: the access order of its keys (eviction victims),
an expiry heap (a cheap "may anything have expired?"), how many entries expired
and were evicted, and a background loop that purges every ``purge_interval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from semcache._engine.commands import Put
from semcache._engine.eviction import AccessLog
from semcache._engine.housekeeping import ExpiryHeap, Housekeeping, MaintenanceLoop
from semcache._engine.local_store import LocalState
from semcache.errors import ClosedError


class LocalHousekeeping:
    """Expiry and capacity eviction for one embedded store; its purge thread runs from construction to :meth:`stop`.

    The store tells it what was read (:meth:`touch`), stored (:meth:`stored`) and
    removed (:meth:`forget`), always under the store's lock.

    Args:
        local: the store's state, lock and log.
        clock: milliseconds since the epoch (the store's).
        policy: the eviction policy, checked (:func:`~semcache._engine.eviction.check_policy`).
        capacity: most entries kept, or None for no limit.
        purge_interval: seconds between background purges.
    """

    def __init__(self, local: LocalState, clock: Callable[[], int], *, policy: str, capacity: int | None,
                 purge_interval: float) -> None:
        self._local = local
        self._clock = clock
        self.policy = policy
        self.capacity = capacity
        self.access = AccessLog()
        self.expiries = ExpiryHeap()
        self.expiries.rebuild(local.state.entries)
        self.expired = 0
        self.evicted = 0
        self._driver = Housekeeping(read=local.read, submit=local.submit, access=self.access, policy=policy,
                                    capacity=capacity)
        self._purger = MaintenanceLoop("semcache-purge", purge_interval, self._purge_round)
        self._purger.start()

    def touch(self, key: str, now_ms: int) -> None:
        """Record a read of ``key`` (the eviction order)."""
        self.access.touch(key, now_ms)

    def stored(self, put: Put) -> None:
        """Account for a put just applied: its access, its expiry, then the capacity."""
        self.access.touch(put.key, put.created_at_ms)
        if put.expires_at_ms:
            self.expiries.add(put.expires_at_ms, put.key, self._local.state.entries)
        self._evict_if_over_capacity()

    def forget(self, keys: list[str]) -> None:
        """Drop the access records of keys that left the store."""
        for key in keys:
            self.access.forget(key)

    def purge_expired(self) -> int:
        """Remove expired entries now; how many.  The heap says cheaply whether any may have expired."""
        now = self._clock()
        with self._local.lock:
            self._local.check_open()
            if not self.expiries.due(now):
                return 0
            self.expiries.drop_due(now)
            removed = self._driver.expire(now)
            self.expired += removed
            return removed

    def counts(self) -> dict[str, Any]:
        """The store's stats from here: entries expired and evicted, the capacity and the policy."""
        return {"expired": self.expired, "evicted": self.evicted, "capacity": self.capacity, "eviction": self.policy}

    def stop(self) -> None:
        """Stop the purge thread (after its current round)."""
        self._purger.stop()

    def _purge_round(self) -> None:
        """One background purge; a store closed meanwhile has nothing left to purge."""
        try:
            self.purge_expired()
        except ClosedError:
            return

    def _evict_if_over_capacity(self) -> None:
        """Expired entries first, whatever the policy (they are dead already); then evict 1 % below capacity."""
        if not self._driver.over_capacity():
            return
        self.purge_expired()
        self.evicted += self._driver.evict_over_capacity()
