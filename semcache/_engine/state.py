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

import hashlib
import json
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from semcache._engine.commands import Clear, Command, Delete, Evict, Expire, Put
from semcache._engine.index import IndexSettings, VectorIndex
from semcache.errors import (
    ConfigurationError,
    CorruptDataError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
)

SNAPSHOT_FORMAT = 1
DEFAULT_SCOPE = ""
# Timestamps are stored as signed 64-bit milliseconds (commands, WAL, snapshots).
MAX_TIMESTAMP_MS = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """Size limits enforced on every write (bytes, UTF-8 for text)."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    max_scope_bytes: int = 512

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"limit {name} must be a positive int, got {value!r}")


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


def utf8_size(text: str, what: str) -> int:
    """The UTF-8 size of ``text``; a lone surrogate (not encodable) is an input error."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode text: {exc.reason} at index {exc.start}") from exc


def check_key(key: object, limits: Limits) -> str:
    """Validate a key: a non-empty str of at most ``limits.max_key_bytes`` UTF-8 bytes."""
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be str, got {type(key).__name__}")
    if not key:
        raise InvalidInputError("key must not be empty")
    size = utf8_size(key, "key")
    if size > limits.max_key_bytes:
        raise LimitExceededError("key", size, limits.max_key_bytes)
    return key


def check_value_size(value: bytes, limits: Limits) -> None:
    """Refuse a value over ``limits.max_value_bytes`` (writers check before paying for an embedding)."""
    if len(value) > limits.max_value_bytes:
        raise LimitExceededError("value", len(value), limits.max_value_bytes)


def check_scope_name(scope: object, limits: Limits) -> str:
    """Validate a scope name: a str of at most ``limits.max_scope_bytes`` UTF-8 bytes."""
    if not isinstance(scope, str):
        raise InvalidInputError(f"scope must be str, got {type(scope).__name__}")
    size = utf8_size(scope, "scope")
    if size > limits.max_scope_bytes:
        raise LimitExceededError("scope", size, limits.max_scope_bytes)
    return scope


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
        """Write the whole state into the (empty or new) ``directory``.

        Layout: ``state.json`` (settings, stamps, per-scope index metadata),
        ``entries.bin`` (the KV map, sorted by key) and one hnswlib
        ``index-N.bin`` per scope.
        """
        directory.mkdir(parents=True, exist_ok=True)
        scopes = []
        for number, scope in enumerate(sorted(self.indexes)):
            file = f"index-{number}.bin"
            meta = self.indexes[scope].save(directory / file)
            scopes.append({"scope": scope, "file": file, "meta": meta})
        (directory / "entries.bin").write_bytes(_encode_entries(self.entries))
        header = {
            "format": SNAPSHOT_FORMAT,
            "model_id": self.model_id,
            "dim": self.dim,
            "settings": asdict(self.settings),
            "limits": asdict(self.limits),
            "applied": self.applied,
            "scopes": scopes,
        }
        (directory / "state.json").write_text(json.dumps(header, sort_keys=True, indent=1))

    @classmethod
    def restore(
        cls, directory: Path, *, model_id: str | None = None, dim: int | None = None
    ) -> ShardState:
        """Read a snapshot written by :meth:`snapshot`.

        Raises:
            EmbeddingMismatchError: the snapshot was built with another model or dimension.
            CorruptDataError: a file is missing, damaged or in an unknown format.
        """
        try:
            return cls._read_snapshot(directory, model_id, dim)
        except (EmbeddingMismatchError, CorruptDataError):
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error, RuntimeError) as exc:
            # json, struct, hnswlib and our own setting checks all end up here.
            raise CorruptDataError(f"snapshot in {directory} is damaged or unreadable: {exc!r}") from exc

    @classmethod
    def _read_snapshot(cls, directory: Path, model_id: str | None, dim: int | None) -> ShardState:
        header = json.loads((directory / "state.json").read_text())
        if header.get("format") != SNAPSHOT_FORMAT:
            raise CorruptDataError(f"unknown snapshot format {header.get('format')!r} in {directory}")
        if (model_id is not None and header["model_id"] != model_id) or (dim is not None and header["dim"] != dim):
            raise EmbeddingMismatchError(
                f"{directory} was built with {header['model_id']} (dim {header['dim']}); "
                f"it cannot be opened with {model_id} (dim {dim})"
            )
        settings = IndexSettings(**header["settings"])
        state = cls(header["dim"], header["model_id"], settings, Limits(**header["limits"]))
        state.applied = header["applied"]
        state.entries = _decode_entries((directory / "entries.bin").read_bytes())
        for scope in header["scopes"]:
            index = VectorIndex.load(directory / scope["file"], state.dim, settings, scope["meta"])
            state._add_index(scope["scope"], index)
        for key, entry in state.entries.items():
            if entry.label is not None:
                state._key_of_label[entry.scope][entry.label] = key
        return state

    def digest(self) -> str:
        """SHA-256 over the snapshot bytes: equal digests mean identical replicas."""
        with tempfile.TemporaryDirectory(prefix="semcache-digest-") as tmp:
            self.snapshot(Path(tmp))
            sha = hashlib.sha256()
            for file in sorted(Path(tmp).iterdir()):
                sha.update(file.name.encode())
                sha.update(file.read_bytes())
            return sha.hexdigest()


_ENTRY_HEAD = struct.Struct("<IIIqqq")  # key, value, scope lengths; label (-1 none), created, expires


def _encode_entries(entries: dict[str, Entry]) -> bytes:
    parts = []
    for key in sorted(entries):
        entry = entries[key]
        key_b, scope_b = key.encode("utf-8", "surrogatepass"), entry.scope.encode("utf-8")
        label = -1 if entry.label is None else entry.label
        parts.append(
            _ENTRY_HEAD.pack(
                len(key_b), len(entry.value), len(scope_b), label, entry.created_at_ms, entry.expires_at_ms
            )
        )
        parts += [key_b, entry.value, scope_b]
    return b"".join(parts)


def _decode_entries(data: bytes) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    view, pos = memoryview(data), 0
    while pos < len(view):
        key_len, value_len, scope_len, label, created, expires = _ENTRY_HEAD.unpack_from(view, pos)
        pos += _ENTRY_HEAD.size
        if pos + key_len + value_len + scope_len > len(view):
            raise CorruptDataError(f"entries.bin is truncated: an entry runs past its end at byte {pos}")
        key = bytes(view[pos : pos + key_len]).decode("utf-8", "surrogatepass")
        pos += key_len
        value = bytes(view[pos : pos + value_len])
        pos += value_len
        scope = bytes(view[pos : pos + scope_len]).decode("utf-8")
        pos += scope_len
        entries[key] = Entry(value, scope, None if label < 0 else label, created, expires)
    return entries
