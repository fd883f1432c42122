"""A shard's vector indexes: one :class:`~semcache._engine.index.VectorIndex` per scope, and what they defer.

A scope's index is created by the first searchable put in that scope and
dropped by a clear of its prefix.  Each index chooses the labels of its
vectors; :class:`ScopeIndexes` remembers which key holds each label (derived
from the entries, so rebuilt on restore, never written to a snapshot).

Indexes may defer their hnswlib calls (:mod:`semcache._engine.index`); the
bound is over all scopes together, because a store may hold thousands of
scopes: the count of deferred calls is kept here, and past ``backlog`` the
oldest are indexed.  When calls run never changes what the graphs become,
so none of this is part of the replicated state.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from semcache._engine.index import IndexSettings, VectorIndex


class ScopeIndexes:
    """One index per scope, the key of each label, and the deferred hnswlib calls counted over all of them.

    Args:
        dim: the vectors' dimension.
        settings: HNSW settings of new indexes (``ef_search`` applies to all of them).
        backlog: hnswlib calls the indexes may defer in all (0: index every vector at once).
    """

    def __init__(self, dim: int, settings: IndexSettings, backlog: int = 0) -> None:
        self.dim = dim
        self.settings = settings
        self.backlog = backlog
        self.indexes: dict[str, VectorIndex] = {}
        self._key_of_label: dict[str, dict[int, str]] = {}
        self._queued_total = 0  # deferred hnswlib calls over all indexes...
        self._scopes_queued: set[str] = set()  # ...and the scopes whose index has some

    # ------------------------------------------------------------ vectors
    def add(self, scope: str, key: str, vector: bytes) -> int:
        """Index ``key``'s vector in ``scope`` (its index created if need be); the label it got."""
        index = self.indexes.get(scope)
        if index is None:
            index = VectorIndex(self.dim, self.settings, backlog=self._per_index_backlog())
            self._hold(scope, index)
        label = index.add(np.frombuffer(vector, dtype=np.float32))
        self._key_of_label[scope][label] = key
        return label

    def remove(self, scope: str, label: int) -> None:
        """Drop ``label`` from ``scope``'s index."""
        self.indexes[scope].remove(label)
        del self._key_of_label[scope][label]

    def drop(self, scope_prefix: str) -> None:
        """Drop the index of every scope starting with ``scope_prefix``, with the calls it deferred."""
        for scope in [scope for scope in self.indexes if scope.startswith(scope_prefix)]:
            self._queued_total -= self.indexes.pop(scope).queued
            self._scopes_queued.discard(scope)
            del self._key_of_label[scope]

    def vector(self, scope: str, label: int) -> np.ndarray:
        """The stored (normalised) vector of ``label`` in ``scope``."""
        return self.indexes[scope].vector(label)

    def of_scope(self, scope: str) -> tuple[VectorIndex, dict[int, str]] | None:
        """``scope``'s index and the key of each of its labels (None: the scope has no index)."""
        index = self.indexes.get(scope)
        return None if index is None else (index, self._key_of_label[scope])

    def adopt(self, indexes: dict[str, VectorIndex], labelled: Iterable[tuple[str, str, int]]) -> None:
        """Take restored ``indexes`` as these (which are empty), and the ``(key, scope, label)`` of each
        searchable entry."""
        for scope, index in indexes.items():
            self._hold(scope, index)
        for key, scope, label in labelled:
            self._key_of_label[scope][label] = key

    def set_ef_search(self, ef_search: int) -> None:
        """Use another query-time ``ef`` in every index, and in new ones (search effort only, never the graph)."""
        self.settings = replace(self.settings, ef_search=ef_search)
        for index in self.indexes.values():
            index.set_ef_search(ef_search)

    # ------------------------------------------------------------ backlog
    @property
    def queued(self) -> int:
        """hnswlib calls deferred by the indexes (their vectors are already searchable)."""
        return self._queued_total

    def set_backlog(self, backlog: int) -> None:
        """Let the indexes defer up to ``backlog`` hnswlib calls in all (0: index every vector as it is applied)."""
        self.backlog = backlog
        for index in self.indexes.values():
            index.backlog = self._per_index_backlog()
        self.bound_backlog()

    def bound_backlog(self) -> None:
        """Index the oldest deferred calls past ``backlog``."""
        excess = self._queued_total - self.backlog
        if excess > 0:
            self.index_pending(excess)

    def index_pending(self, max_ops: int = 1) -> int:
        """Run up to ``max_ops`` deferred hnswlib calls; return how many ran (the order across scopes does
        not matter)."""
        done = 0
        for scope in list(self._scopes_queued):
            if done >= max_ops:
                break
            done += self.indexes[scope].index_pending(max_ops - done)
        return done

    def _per_index_backlog(self) -> int:
        # The bound is over all scopes together, so an index itself never indexes
        # early unless nothing may wait.
        return sys.maxsize if self.backlog else 0

    def _hold(self, scope: str, index: VectorIndex) -> None:
        """Hold ``index`` for ``scope`` and keep the running count of its deferred calls."""
        self.indexes[scope] = index
        self._key_of_label[scope] = {}
        index.on_queue_change = lambda delta: self._queue_changed(scope, delta)

    def _queue_changed(self, scope: str, delta: int) -> None:
        self._queued_total += delta
        if self.indexes[scope].queued:  # the index tells after its queue changed
            self._scopes_queued.add(scope)
        else:
            self._scopes_queued.discard(scope)

    def stats(self) -> dict[str, int]:
        """Searchable vectors, scopes, hnswlib slots and deferred calls."""
        return {
            "searchable": sum(len(index) for index in self.indexes.values()),
            "scopes": len(self.indexes),
            "index_slots": sum(index.slots for index in self.indexes.values()),
            "index_queue": self._queued_total,
        }
