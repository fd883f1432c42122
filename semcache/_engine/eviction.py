"""Eviction: deciding which keys leave when a store is over capacity.

Deciding is kept apart from applying.  A policy looks at the entries and at
the local :class:`AccessLog` (reads are not replicated, so only the issuer, the
embedded engine or the Raft leader, knows them) and returns keys; the issuer
then applies an :class:`~semcache._engine.commands.Evict` command that every replica
replays identically.

Policies: ``"lru"`` (least recently read or written, the default), ``"lfu"``
(fewest reads, oldest first on ties) and ``"ttl"`` (soonest to expire first,
entries without a TTL last, in LRU order).

>>> from semcache._engine.state import Entry
>>> entries = {"a": Entry(b"", "", None, 1, 0), "b": Entry(b"", "", None, 2, 0)}
>>> log = AccessLog()
>>> log.touch("a", 10)
>>> choose_victims("lru", entries, log, 1)
['b']
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping

from semcache._engine.state import Entry
from semcache.errors import ConfigurationError

POLICIES = ("lru", "lfu", "ttl")


class AccessLog:
    """Last-access time and read count per key, kept locally (never replicated)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._reads: dict[str, int] = {}
        self._lock = threading.Lock()

    def touch(self, key: str, now_ms: int) -> None:
        with self._lock:
            self._last[key] = now_ms
            self._reads[key] = self._reads.get(key, 0) + 1

    def forget(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)
            self._reads.pop(key, None)

    def __len__(self) -> int:
        """Keys with a record (it must shrink as entries leave, or a TTL-heavy cache leaks)."""
        return len(self._last)

    def last_access(self, key: str, default: int) -> int:
        return self._last.get(key, default)

    def reads(self, key: str) -> int:
        return self._reads.get(key, 0)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigurationError(f"unknown eviction policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def choose_victims(policy: str, entries: Mapping[str, Entry], log: AccessLog, count: int) -> list[str]:
    """The ``count`` keys ``policy`` would evict first, in eviction order."""
    check_policy(policy)
    if count <= 0:
        return []

    never = 2**62  # under "ttl", entries without a TTL go after every expiring one

    def rank(key: str) -> tuple[int, int, str]:
        recency = log.last_access(key, entries[key].created_at_ms)
        if policy == "lru":
            return (recency, 0, key)
        if policy == "lfu":
            return (log.reads(key), recency, key)
        return (entries[key].expires_at_ms or never, recency, key)

    return heapq.nsmallest(count, entries, key=rank)
