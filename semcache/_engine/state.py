"""Shard state: the deterministic state machine every replica runs.

A :class:`ShardState` holds a key-value map and one HNSW index per scope.  It
changes only through :meth:`ShardState.apply` of a command
(:mod:`semcache._engine.commands`); reads (:meth:`get`, :meth:`search`, :meth:`scan`)
take the caller's clock to hide expired entries but never mutate anything.
Applying the same commands in the same order gives byte-identical snapshots.

>>> import numpy as np
>>> from semcache._engine.commands import Put
>>> state = ShardState(dim=2, model_id="demo")
>>> vec = np.array([1.0, 0.0], dtype=np.float32).tobytes()
>>> state.apply(Put("k", b"v", "", vec, created_at_ms=0, expires_at_ms=0))
True
>>> state.get("k", now_ms=1).value
b'v'
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from semcache._engine.commands import Clear, Command, Delete, Evict, Expire, Put
from semcache._engine.index import IndexSettings, VectorIndex
from semcache._engine.inputs import (
    MAX_TIMESTAMP_MS,
    Limits,
    check_key,
    check_scope_name,
    check_value_size,
    utf8_size,
)
from semcache.errors import EmbeddingMismatchError, InvalidInputError

SNAPSHOT_FORMAT = 1


@dataclass(slots=True)
class Entry:
    """One stored value.  ``label`` is its slot in the scope's index, None when not searchable."""

    value: bytes
    scope: str
    label: int | None
    created_at_ms: int
    expires_at_ms: int  # 0 means never

    def expired(self, now_ms: int) -> bool:
        return 0 < self.expires_at_ms <= now_ms


@dataclass(frozen=True, slots=True)
class Match:
    """A search result inside one shard."""

    key: str
    entry: Entry
    similarity: float


class ShardState:
    """Key-value entries plus one HNSW index per scope, changed only by commands."""

    def __init__(
        self,
        dim: int,
        model_id: str,
        settings: IndexSettings | None = None,
        limits: Limits | None = None,
        *,
        index_backlog: int = 0,
    ) -> None:
        self.dim = dim
        self.model_id = model_id
        self.settings = settings or IndexSettings()
        self.limits = limits or Limits()
        # hnswlib inserts the indexes may defer in all (see semcache._engine.index); never part of the replicated state.
        self.index_backlog = index_backlog
        self._queued_total = 0  # deferred hnswlib calls over all indexes...
        self._scopes_queued: set[str] = set()  # ...and the scopes whose index has some
        self.entries: dict[str, Entry] = {}
        self.indexes: dict[str, VectorIndex] = {}
        # Derived from entries (rebuilt on restore): which key holds each label, per scope.
        self._key_of_label: dict[str, dict[int, str]] = {}
        self.applied = 0  # commands applied so far: the position in the command stream

    # ----------------------------------------------------------------- writes
    def validate(self, command: Command) -> None:
        """Raise :class:`InvalidInputError` if ``command`` must not be applied.

        Issuers call this before logging a command, so :meth:`apply` of a
        logged command never fails halfway.
        """
        match command:
            case Put():
                check_key(command.key, self.limits)
                if not isinstance(command.value, bytes):
                    raise InvalidInputError(f"value must be bytes, got {type(command.value).__name__}")
                check_value_size(command.value, self.limits)
                check_scope_name(command.scope, self.limits)
                if command.vector is not None:
                    self._check_vector(command.vector)
                for stamp in (command.created_at_ms, command.expires_at_ms):
                    if not 0 <= stamp <= MAX_TIMESTAMP_MS:
                        raise InvalidInputError(f"timestamp {stamp} is outside [0, {MAX_TIMESTAMP_MS}] ms")
            case Delete():
                check_key(command.key, self.limits)
            case Clear():
                if not isinstance(command.scope_prefix, str):
                    raise InvalidInputError(f"scope prefix must be str, got {type(command.scope_prefix).__name__}")
                utf8_size(command.scope_prefix, "scope prefix")
            case Expire():
                if isinstance(command.now_ms, bool) or not isinstance(command.now_ms, int):
                    raise InvalidInputError(f"expire time must be int ms, got {command.now_ms!r}")
            case Evict():
                for key in command.keys:
                    check_key(key, self.limits)

    def _check_vector(self, vector: object) -> None:
        """A command's vector: ``dim`` float32 values, finite and not all zero (what hnswlib can index)."""
        if not isinstance(vector, bytes):
            raise InvalidInputError(f"vector must be float32 bytes, got {type(vector).__name__}")
        if len(vector) != self.dim * 4:
            raise EmbeddingMismatchError(
                f"vector has {len(vector) / 4:g} float32 values, this store holds dimension {self.dim}"
            )
        array = np.frombuffer(vector, dtype=np.float32)
        if not np.isfinite(array).all() or not array.any():
            raise InvalidInputError("vector contains NaN or inf, or is all zeros")

    def apply(self, command: Command) -> int:
        """Apply one command; returns True for a put, whether a delete found its key,
        and the number of entries removed for clear, expire and evict."""
        result = self._apply(command)
        if self.index_backlog:
            self._bound_backlog()
        return result

    def _apply(self, command: Command) -> int:
        self.applied += 1
        match command:
            case Put():
                if self._same_vector(command):
                    # An overwrite with the vector already indexed (a retried put, or a new
                    # value for the same text) keeps its slot: re-inserting would cost an
                    # hnswlib slot update, several times a fresh insert.
                    old = self.entries[command.key]
                    self.entries[command.key] = Entry(
                        command.value, command.scope, old.label, command.created_at_ms, command.expires_at_ms
                    )
                    return True
                self._remove(command.key)
                label = None
                if command.vector is not None:
                    index = self._index_for(command.scope)
                    label = index.add(np.frombuffer(command.vector, dtype=np.float32))
                    self._key_of_label[command.scope][label] = command.key
                self.entries[command.key] = Entry(
                    command.value, command.scope, label, command.created_at_ms, command.expires_at_ms
                )
                return True
            case Delete():
                return self._remove(command.key)
            case Clear():
                return self._clear(command.scope_prefix)
            case Expire():
                doomed = [key for key, entry in self.entries.items() if entry.expired(command.now_ms)]
                return sum(self._remove(key) for key in doomed)
            case Evict():
                return sum(self._remove(key) for key in command.keys)
        raise InvalidInputError(f"not a command: {command!r}")

    def _same_vector(self, put: Put) -> bool:
        """Whether ``put`` overwrites its key in the same scope with the vector already indexed.

        Replicas decide alike: the answer depends only on the state and the command.
        """
        old = self.entries.get(put.key)
        if old is None or old.label is None or put.vector is None or old.scope != put.scope:
            return False
        stored = self.indexes[old.scope].vector(old.label)
        new = np.frombuffer(put.vector, dtype=np.float32)
        # hnswlib stores cosine vectors normalised; compare after the same normalisation.
        return bool(np.allclose(stored, new / np.linalg.norm(new), rtol=0.0, atol=1e-6))

    def set_ef_search(self, ef_search: int) -> None:
        """Use another query-time ``ef`` in every index (search effort only, never the graph)."""
        self.settings = replace(self.settings, ef_search=ef_search)
        for index in self.indexes.values():
            index.set_ef_search(ef_search)

    def set_index_backlog(self, backlog: int) -> None:
        """Let the indexes defer up to ``backlog`` hnswlib calls in all (0: index every vector as it is applied)."""
        self.index_backlog = backlog
        for index in self.indexes.values():
            index.backlog = self._per_index_backlog()
        self._bound_backlog()

    def _per_index_backlog(self) -> int:
        # The bound is over all scopes together (a store may hold thousands of
        # scopes), so an index itself never indexes early unless nothing may wait.
        return sys.maxsize if self.index_backlog else 0

    def _bound_backlog(self) -> None:
        excess = self.queued_index_ops - self.index_backlog
        if excess > 0:
            self.index_pending(excess)

    @property
    def queued_index_ops(self) -> int:
        """hnswlib calls deferred by the indexes (their vectors are already searchable)."""
        return self._queued_total

    def index_pending(self, max_ops: int = 1) -> int:
        """Run up to ``max_ops`` deferred hnswlib calls; return how many ran.

        It changes when the graph is built, never what it becomes: the owner calls
        it whenever it has a spare moment (the order across scopes does not matter).
        """
        done = 0
        for scope in list(self._scopes_queued):
            if done >= max_ops:
                break
            done += self.indexes[scope].index_pending(max_ops - done)
        return done

    def _index_for(self, scope: str) -> VectorIndex:
        index = self.indexes.get(scope)
        if index is None:
            index = VectorIndex(self.dim, self.settings, backlog=self._per_index_backlog())
            self._add_index(scope, index)
        return index

    def _add_index(self, scope: str, index: VectorIndex) -> None:
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

    def _remove(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        if entry.label is not None:
            self.indexes[entry.scope].remove(entry.label)
            del self._key_of_label[entry.scope][entry.label]
        return True

    def _clear(self, scope_prefix: str) -> int:
        doomed = [key for key, entry in self.entries.items() if entry.scope.startswith(scope_prefix)]
        for key in doomed:
            del self.entries[key]
        for scope in [scope for scope in self.indexes if scope.startswith(scope_prefix)]:
            self._queued_total -= self.indexes.pop(scope).queued  # its deferred calls go with it
            self._scopes_queued.discard(scope)
            del self._key_of_label[scope]
        return len(doomed)

    # ------------------------------------------------------------------ reads
    def get(self, key: str, now_ms: int) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None or entry.expired(now_ms):
            return None
        return entry

    def scan(self, prefix: str, limit: int, now_ms: int) -> list[str]:
        keys = sorted(k for k, e in self.entries.items() if k.startswith(prefix) and not e.expired(now_ms))
        return keys[:limit]

    def search(
        self, vector: np.ndarray, scope: str, top_k: int, threshold: float | None, now_ms: int
    ) -> list[Match]:
        """The ``top_k`` live entries of ``scope`` nearest to ``vector``, at or above ``threshold``."""
        index = self.indexes.get(scope)
        if index is None or top_k <= 0:
            return []
        key_of = self._key_of_label[scope]

        def live(label: int) -> bool:
            key = key_of.get(label)
            return key is not None and not self.entries[key].expired(now_ms)

        matches = [
            Match(key_of[label], self.entries[key_of[label]], similarity)
            for label, similarity in index.search(vector, top_k, live)
        ]
        if threshold is not None:
            matches = [m for m in matches if m.similarity >= threshold]
        return matches

    def expired_keys(self, now_ms: int) -> list[str]:
        return [key for key, entry in self.entries.items() if entry.expired(now_ms)]

    def stats(self) -> dict[str, object]:
        return {
            "entries": len(self.entries),
            "searchable": sum(len(index) for index in self.indexes.values()),
            "scopes": len(self.indexes),
            "index_slots": sum(index.slots for index in self.indexes.values()),
            "index_queue": self.queued_index_ops,
            "ef_search": self.settings.ef_search,
            "applied": self.applied,
            "model_id": self.model_id,
            "dim": self.dim,
            "value_bytes": sum(len(entry.value) for entry in self.entries.values()),
        }

    # -------------------------------------------------------------- snapshots
    def snapshot(self, directory: Path) -> None:
        """Write the whole state into the (empty or new) ``directory`` (see :mod:`semcache._engine.snapshot`)."""
        from semcache._engine.snapshot import write_snapshot

        write_snapshot(self, directory)

    @classmethod
    def restore(cls, directory: Path, *, model_id: str | None = None, dim: int | None = None) -> ShardState:
        """Read a snapshot written by :meth:`snapshot`.

        Raises:
            EmbeddingMismatchError: the snapshot was built with another model or dimension.
            CorruptDataError: a file is missing, damaged or in an unknown format.
        """
        from semcache._engine.snapshot import read_snapshot

        return read_snapshot(directory, model_id=model_id, dim=dim)

    def digest(self) -> str:
        """SHA-256 over the snapshot bytes: equal digests mean identical replicas."""
        from semcache._engine.snapshot import snapshot_digest

        return snapshot_digest(self)

    def adopt(self, entries: dict[str, Entry], indexes: dict[str, VectorIndex], applied: int) -> None:
        """Take restored ``entries`` and per-scope ``indexes`` as this (empty) state's, at position ``applied``."""
        self.entries = entries
        self.applied = applied
        for scope, index in indexes.items():
            self._add_index(scope, index)
        for key, entry in entries.items():
            if entry.label is not None:
                self._key_of_label[entry.scope][entry.label] = key
