"""A small bounded, thread-safe LRU map: the memos of the cache's hot paths are built on it.

>>> memo = LRU(2)
>>> memo.put("a", 1); memo.put("b", 2); memo.get("a")
1
>>> memo.put("c", 3)  # "b" is the least recently used: it goes
>>> memo.get("b") is None, len(memo)
(True, 2)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from semcache._engine.inputs import whole_number
from semcache.errors import ConfigurationError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``size`` entries; putting one more drops the least recently used.

    Raises:
        ConfigurationError: ``size`` is not an int >= 1.
    """

    def __init__(self, size: int) -> None:
        whole_number(size, "memo size", minimum=1, error=ConfigurationError)
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
