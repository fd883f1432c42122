"""Expiry and capacity eviction: one driver for the embedded store and for a Raft leader.

Both stores remove entries the same way: they decide here what leaves, then
issue an :class:`~semcache._engine.commands.Expire` or
:class:`~semcache._engine.commands.Evict` command through their own write path
(the embedded store's log, or the Raft log, where every replica replays it).
What differs is passed in: how to read the state and submit a command, the
capacity and eviction policy, and how many bytes of keys one ``Evict`` may
carry (a Raft entry has a size limit; the embedded log has none).

* Expired: every entry whose ``expires_at_ms`` has passed (an expired entry is
  already hidden from reads; removing it only frees the space).
* Over capacity: more entries than ``capacity``; victims are chosen down to
  99 % of it (:func:`eviction_victims`), so choosing (a pass over every entry)
  is paid once per many writes rather than on every write.
* :class:`MaintenanceLoop` runs a store's round in the background.

>>> chunk_keys(["aa", "bb", "cc"], budget=12)
[['aa', 'bb'], ['cc']]
>>> eviction_target(1000)
990
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from semcache._engine.commands import Evict, Expire
from semcache._engine.eviction import AccessLog, choose_victims
from semcache._engine.state import Entry, ShardState

logger = logging.getLogger(__name__)

KEY_OVERHEAD = 4  # the length prefix of each key in an encoded Evict

StateReader = Callable[[Callable[[ShardState], Any]], Any]


def eviction_target(capacity: int) -> int:
    """How many entries an eviction leaves: 1 % below ``capacity``."""
    return capacity - capacity // 100


def eviction_victims(policy: str, entries: Mapping[str, Entry], access: AccessLog, capacity: int | None) -> list[str]:
    """The keys to evict so ``entries`` fall to :func:`eviction_target`; none while at or under ``capacity``."""
    if capacity is None or len(entries) <= capacity:
        return []
    return choose_victims(policy, entries, access, len(entries) - eviction_target(capacity))


def chunk_keys(keys: list[str], budget: int | None) -> list[list[str]]:
    """Split ``keys`` into lists whose encoded size stays under ``budget`` bytes (one list if None)."""
    if budget is None:
        return [keys] if keys else []
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for key in keys:
        cost = len(key.encode("utf-8", "surrogatepass")) + KEY_OVERHEAD
        if current and size + cost > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(key)
        size += cost
    if current:
        chunks.append(current)
    return chunks


class Housekeeping:
    """Decides which entries leave a store (expired, or over capacity) and submits the commands that remove them.

    Args:
        read: runs a function on the store's state under the store's lock and returns its result.
        submit: validates, logs and applies a command; returns how many entries it removed.
        access: the store's local read record (eviction order); removed keys are forgotten.
        policy: the eviction policy (:mod:`semcache._engine.eviction`).
        capacity: most entries kept, or None for no limit.
        evict_budget: bytes of keys one ``Evict`` may carry (None: one command for all victims).
    """

    def __init__(
        self,
        *,
        read: StateReader,
        submit: Callable[[Any], int],
        access: AccessLog,
        policy: str,
        capacity: int | None,
        evict_budget: int | None = None,
    ) -> None:
        self._read = read
        self._submit = submit
        self._access = access
        self._policy = policy
        self.capacity = capacity
        self._evict_budget = evict_budget

    def over_capacity(self) -> bool:
        """Whether the store holds more entries than its capacity."""
        capacity = self.capacity
        return capacity is not None and bool(self._read(lambda state: len(state.entries) > capacity))

    def expire(self, now_ms: int) -> int:
        """Submit ``Expire(now_ms)`` if any entry has expired by then; returns how many entries it removed."""
        doomed: list[str] = self._read(lambda state: state.expired_keys(now_ms))
        if not doomed:
            return 0
        removed = self._submit(Expire(now_ms))
        self._forget(doomed)
        return removed

    def evict_over_capacity(self) -> int:
        """Evict down to 99 % of capacity, in commands of at most ``evict_budget`` bytes of keys each."""
        victims: list[str] = self._read(
            lambda state: eviction_victims(self._policy, state.entries, self._access, self.capacity)
        )
        removed = 0
        for chunk in chunk_keys(victims, self._evict_budget):
            removed += self._submit(Evict(tuple(chunk)))
            self._forget(chunk)
        return removed

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            self._access.forget(key)


class ExpiryHeap:
    """When entries expire, soonest first: a cheap "has anything expired?" for a store that sees its own writes.

    It may hold stale rows (a key re-put with another TTL, or deleted, keeps its
    old row): they only make :meth:`due` say yes early, since what expires is
    decided from the entries themselves.  Rebuilt before stale rows dominate.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def rebuild(self, entries: Mapping[str, Entry]) -> None:
        """One row per entry with a TTL, from the entries themselves."""
        self._rows = [(entry.expires_at_ms, key) for key, entry in entries.items() if entry.expires_at_ms]
        heapq.heapify(self._rows)

    def add(self, expires_at_ms: int, key: str, entries: Mapping[str, Entry]) -> None:
        """Record that ``key`` expires at ``expires_at_ms``; ``entries`` is the store's, for compaction."""
        heapq.heappush(self._rows, (expires_at_ms, key))
        # Re-putting a key leaves its old row behind; rebuild before stale rows dominate.
        if len(self._rows) > 2 * len(entries) + 1024:
            self.rebuild(entries)

    def due(self, now_ms: int) -> bool:
        """Whether some row has expired by ``now_ms``."""
        return bool(self._rows) and self._rows[0][0] <= now_ms

    def drop_due(self, now_ms: int) -> None:
        """Forget every row expired by ``now_ms`` (the caller is removing those entries)."""
        while self._rows and self._rows[0][0] <= now_ms:
            heapq.heappop(self._rows)


class MaintenanceLoop:
    """A daemon thread that runs ``one_round`` every ``interval`` seconds, or at once when woken, until stopped.

    An exception in one round is logged and the loop goes on: a store's
    housekeeping must outlive one bad round.  ``one_round`` itself decides what is
    worth less than a logged traceback (a follower skipping, a store closing).
    """

    def __init__(self, name: str, interval: float, one_round: Callable[[], None]) -> None:
        self._interval = interval
        self._round = one_round
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run the next round now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current round; wait up to ``timeout`` seconds for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._round()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("%s: housekeeping round failed", self._thread.name)
