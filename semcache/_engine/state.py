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

from dataclasses import dataclass
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
from semcache._engine.scope_indexes import ScopeIndexes
from semcache.errors import EmbeddingMismatchError, InvalidInputError


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
    """Key-value entries plus one HNSW index per scope (:class:`~semcache._engine.scope_indexes.ScopeIndexes`),
    changed only by commands."""

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
        self.limits = limits or Limits()
        self.entries: dict[str, Entry] = {}
        # hnswlib inserts the indexes may defer in all (index_backlog) are never part of the replicated state.
        self._scopes = ScopeIndexes(dim, settings or IndexSettings(), index_backlog)
        self.applied = 0  # commands applied so far: the position in the command stream

    @property
    def settings(self) -> IndexSettings:
        """The HNSW settings of new indexes; ``ef_search`` is every index's."""
        return self._scopes.settings

    @property
    def indexes(self) -> dict[str, VectorIndex]:
        """Each scope's index."""
        return self._scopes.indexes

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
        if self._scopes.backlog:
            self._scopes.bound_backlog()
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
                    label = self._scopes.add(command.scope, command.key, command.vector)
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
        stored = self._scopes.vector(old.scope, old.label)
        new = np.frombuffer(put.vector, dtype=np.float32)
        # hnswlib stores cosine vectors normalised; compare after the same normalisation.
        return bool(np.allclose(stored, new / np.linalg.norm(new), rtol=0.0, atol=1e-6))

    def set_ef_search(self, ef_search: int) -> None:
        """Use another query-time ``ef`` in every index (search effort only, never the graph)."""
        self._scopes.set_ef_search(ef_search)

    def set_index_backlog(self, backlog: int) -> None:
        """Let the indexes defer up to ``backlog`` hnswlib calls in all (0: index every vector as it is applied)."""
        self._scopes.set_backlog(backlog)

    @property
    def queued_index_ops(self) -> int:
        """hnswlib calls deferred by the indexes (their vectors are already searchable)."""
        return self._scopes.queued

    def index_pending(self, max_ops: int = 1) -> int:
        """Run up to ``max_ops`` deferred hnswlib calls; return how many ran.

        It changes when the graph is built, never what it becomes: the owner calls
        it whenever it has a spare moment (the order across scopes does not matter).
        """
        return self._scopes.index_pending(max_ops)

    def _remove(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        if entry.label is not None:
            self._scopes.remove(entry.scope, entry.label)
        return True

    def _clear(self, scope_prefix: str) -> int:
        doomed = [key for key, entry in self.entries.items() if entry.scope.startswith(scope_prefix)]
        for key in doomed:
            del self.entries[key]
        self._scopes.drop(scope_prefix)
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
        found = self._scopes.of_scope(scope)
        if found is None or top_k <= 0:
            return []
        index, key_of = found

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
            **self._scopes.stats(),
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
        self._scopes.adopt(indexes, ((key, e.scope, e.label) for key, e in entries.items() if e.label is not None))
