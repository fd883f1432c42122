"""The embedded store's calls run on its state, once their arguments are checked: stamped, locked, counted.

:class:`~semcache.SemanticKV` checks a call's arguments and embeds
(:mod:`semcache._engine.calls`); :class:`LocalCalls` then runs it on the
store's :class:`~semcache._engine.local_store.LocalState`, as a node runs a
checked request on its replica: a put becomes a command stamped by the store's
clock, a read holds the lock, every call is counted for ``stats()``, and
housekeeping hears what was read, stored and removed (the eviction order, expiry).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from semcache._engine.calls import CheckedPut
from semcache._engine.commands import Clear, Command, Delete, Put
from semcache._engine.local_housekeeping import LocalHousekeeping
from semcache._engine.local_store import LocalState
from semcache._engine.state import Match

COUNTERS = ("puts", "gets", "get_hits", "deletes", "searches", "search_hits")


class LocalCalls:
    """Runs checked calls on one embedded store's state and counts them.

    Args:
        local: the store's state, lock and log.
        clock: milliseconds since the epoch (the store's).
        housekeeping: the store's expiry and eviction, told of every read, put and removal.
    """

    def __init__(self, local: LocalState, clock: Callable[[], int], housekeeping: LocalHousekeeping) -> None:
        self._local = local
        self._clock = clock
        self._housekeeping = housekeeping
        self.counters = dict.fromkeys(COUNTERS, 0)

    def store(self, put: CheckedPut) -> None:
        """Stamp, log and apply a put, then account for it: the counter, then housekeeping (access, expiry,
        capacity)."""
        now = self._clock()
        command = Put(put.key, put.value, put.scope, put.vector, now, now + put.ttl_ms if put.ttl_ms else 0)
        self._local.submit(command)
        with self._local.lock:
            self.counters["puts"] += 1
            self._housekeeping.stored(command)

    def store_in_order(self, puts: list[CheckedPut]) -> tuple[int, BaseException | None]:
        """Store ``puts`` one by one: how many were stored, and the error that stopped the rest."""
        for done, put in enumerate(puts):
            try:
                self.store(put)
            except Exception as exc:  # a full disk, or close() meanwhile: report how far it got
                return done, exc
        return len(puts), None

    def get(self, key: str) -> bytes | None:
        """The live value of ``key`` (a hit counts as an access), or None."""
        now = self._clock()
        with self._local.lock:
            entry = self._local.state.get(key, now)
            self.counters["gets"] += 1
            if entry is None:
                return None
            self.counters["get_hits"] += 1
            self._housekeeping.touch(key, now)
            return entry.value

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live value (not counted, not an access)."""
        with self._local.lock:
            return self._local.state.get(key, self._clock()) is not None

    def scan(self, prefix: str, limit: int) -> list[str]:
        """Live keys starting with ``prefix``, sorted, at most ``limit``."""
        with self._local.lock:
            return self._local.state.scan(prefix, limit, self._clock())

    def search(self, vector: np.ndarray, scope: str, top_k: int, threshold: float | None) -> list[Match]:
        """The nearest live entries of ``scope``, best first; each is an access."""
        now = self._clock()
        with self._local.lock:
            self._local.check_open()  # closed while the query was embedded
            matches = self._local.state.search(vector, scope, top_k, threshold, now)
            self.counters["searches"] += 1
            self.counters["search_hits"] += bool(matches)
            for match in matches:
                self._housekeeping.touch(match.key, now)
            return matches

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        with self._local.lock:
            removed = bool(self._remove(Delete(key), [key]))
            self.counters["deletes"] += 1
        return removed

    def clear(self, scope_prefix: str) -> int:
        """Remove every entry in scopes starting with ``scope_prefix``; how many."""
        with self._local.lock:
            entries = self._local.state.entries
            doomed = [key for key, entry in entries.items() if entry.scope.startswith(scope_prefix)]
            return self._remove(Clear(scope_prefix), doomed)

    def _remove(self, command: Command, doomed: list[str]) -> int:
        """Apply a command that removes ``doomed`` and drop their access records."""
        removed = self._local.submit(command)
        self._housekeeping.forget(doomed)
        return removed
