"""``SemanticKV``: the embedded semantic key-value store (the seed's API, in-process).

>>> from semcache import SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> with SemanticKV(embedding=HashEmbedding()) as kv:
...     kv.put("doc:api", b"REST API endpoints and authentication")
...     kv.get("doc:api")
...     [r.key for r in kv.search("API authentication", top_k=1)]
True
b'REST API endpoints and authentication'
['doc:api']

Bad input is refused with a clear error, and nothing is stored:

>>> with SemanticKV(embedding=HashEmbedding()) as kv:
...     kv.put("k" * 2000, b"value")
Traceback (most recent call last):
    ...
semcache.errors.LimitExceededError: key is 2000 bytes, over the limit of 1024 bytes

Every mutation becomes a command (:mod:`semcache._engine.commands`) applied to a
:class:`~semcache._engine.state.ShardState`; with ``path=`` each command is first
appended to a write-ahead log (:mod:`semcache._engine.storage`).  Embedding happens
before the command is made, outside the lock, so threads embed in parallel and
their single-text calls are micro-batched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semcache._engine.backend import BulkItems, SearchResult
from semcache._engine.bulk import BulkPut, bulk_puts, load_in_chunks
from semcache._engine.clock import SteadyClock
from semcache._engine.commands import Clear, Command, Delete, Put
from semcache._engine.conveniences import Conveniences
from semcache._engine.eviction import AccessLog, check_policy
from semcache._engine.housekeeping import ExpiryHeap, Housekeeping, MaintenanceLoop
from semcache._engine.index import IndexSettings
from semcache._engine.inputs import (
    Limits,
    check_key,
    check_scan_args,
    check_scope,
    check_scope_prefix,
    check_search_args,
    check_ttl_ms,
    check_value_size,
    coerce_value,
    positive_seconds,
    put_vector,
    search_vector,
    whole_number,
)
from semcache._engine.local_store import DEFAULT_CHECKPOINT_BYTES, LocalState
from semcache._engine.state import ShardState
from semcache._engine.storage import DurableLog
from semcache.embeddings import BaseEmbedding, as_embedding
from semcache.errors import ClosedError, ConfigurationError

log = logging.getLogger("semcache")



class SemanticKV(Conveniences):
    """An in-process semantic key-value store.

    Args:
        path: data directory; None keeps everything in memory.
        embedding: an embedder, model name or callable (default: packaged all-MiniLM-L6-v2).
        max_entries: initial HNSW index size (it grows as needed).
        hnsw_m: HNSW graph degree (``M``).
        hnsw_ef_construction: HNSW ``ef`` while inserting.
        ef_search: HNSW ``ef`` while searching (query effort; :meth:`set_ef_search` changes it).
        capacity: most entries kept; beyond it, ``eviction`` chooses victims.
        eviction: ``"lru"`` (default), ``"lfu"`` or ``"ttl"``.
        limits: key, value and scope size limits.
        fsync: fsync every write (power-loss durability) instead of only flushing.
        checkpoint_bytes: write a snapshot once the log grows past this size.
        purge_interval: seconds between background purges of expired entries.
        clock: milliseconds since the epoch (default: the wall clock, never in jumps: semcache._engine.clock).
        node_id: the name reported in search results.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        embedding: Any = None,
        max_entries: int = 100_000,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        ef_search: int = 48,
        capacity: int | None = None,
        eviction: str = "lru",
        limits: Limits | None = None,
        fsync: bool = False,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        purge_interval: float = 1.0,
        clock: Callable[[], int] | None = None,
        node_id: str = "embedded",
    ) -> None:
        if capacity is not None:
            whole_number(capacity, "capacity", minimum=1, error=ConfigurationError)
        positive_seconds(purge_interval, "purge_interval")
        whole_number(checkpoint_bytes, "checkpoint_bytes", minimum=1, error=ConfigurationError)
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning ms, got {type(clock).__name__}")
        self._embedding = as_embedding(embedding)
        self._eviction = check_policy(eviction)
        self._capacity = capacity
        self._clock = clock or SteadyClock()
        self.node_id = node_id
        self._local = LocalState(
            path, self._embedding, IndexSettings(max_entries, hnsw_m, hnsw_ef_construction, ef_search), limits,
            fsync=fsync, checkpoint_bytes=checkpoint_bytes,
        )
        self._access = AccessLog()
        self._expiries = ExpiryHeap()
        self._expiries.rebuild(self._state.entries)
        self._counters = dict.fromkeys(
            ("puts", "gets", "get_hits", "deletes", "searches", "search_hits", "expired", "evicted"), 0
        )
        self._housekeeping = Housekeeping(
            read=self._local.read, submit=self._submit, access=self._access, policy=self._eviction, capacity=capacity
        )
        self._purger = MaintenanceLoop("semcache-purge", purge_interval, self._purge_round)
        self._purger.start()

    # ------------------------------------------------------------- plumbing
    @property
    def embedding(self) -> BaseEmbedding:
        return self._embedding

    @property
    def model_id(self) -> str:
        return self._embedding.model_id

    @property
    def limits(self) -> Limits:
        return self._state.limits

    @property
    def _state(self) -> ShardState:
        return self._local.state

    @property
    def _lock(self) -> threading.RLock:
        return self._local.lock

    @property
    def _log(self) -> DurableLog | None:
        return self._local.log

    def _check_open(self) -> None:
        self._local.check_open()

    def _submit(self, command: Command) -> int:
        return self._local.submit(command)

    # ----------------------------------------------------------------- API
    def put(
        self,
        key: str,
        value: bytes | str,
        ttl_ms: int = 0,
        text: str | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> bool:
        """Store ``value`` under ``key``, searchable by ``text`` (default: the value as UTF-8).

        Args:
            ttl_ms: time to live in milliseconds; 0 keeps it until deleted or evicted.
            scope: the index partition to search it in (default: the shared one).
            vector: a precomputed embedding, used instead of embedding ``text``.

        Raises:
            InvalidInputError: bad key, value, TTL, text or vector (nothing is stored).
        """
        self._check_open()
        check_key(key, self._state.limits)
        data = coerce_value(value)
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope, self._state.limits)
        check_value_size(data, self._state.limits)  # before paying for the embedding
        vector_bytes = put_vector(self._embedding, data, text, vector)
        self._store(self._put_command(key, data, scope, vector_bytes, ttl_ms))
        return True

    def put_many(
        self,
        items: BulkItems,
        ttl_ms: int = 0,
        *,
        scope: str | None = None,
    ) -> int:
        """Store many values at once, their texts embedded in batches (much faster than a ``put`` each).

        ``items`` maps keys to values, or holds ``(key, value)`` or
        ``(key, value, text)`` tuples, ``text`` being what to embed (as in
        :meth:`put`).  All share ``ttl_ms`` and ``scope``.  Returns how many were stored.

        >>> from semcache.embeddings import HashEmbedding
        >>> with SemanticKV(embedding=HashEmbedding()) as kv:
        ...     kv.put_many({"doc:1": "refund policy", "doc:2": "shipping times"})
        ...     kv.put_many([("q:1", b"42", "the answer to everything")])
        ...     kv.search("the answer to everything", top_k=1)[0].key
        2
        1
        'q:1'

        Every item is checked before any is stored; then ``BULK_CHUNK`` items at
        a time are embedded and stored, in order.

        Raises:
            InvalidInputError: a bad item (named by its position), TTL or scope: nothing is stored.
            Exception: the embedder or the log failed midway (or the store was
                closed); the items before are stored, and the error says how many.
        """
        self._check_open()
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope, self._state.limits)

        def write(chunk: list[BulkPut], vectors: list[bytes | None]) -> tuple[int, BaseException | None]:
            for done, (item, vector) in enumerate(zip(chunk, vectors, strict=True)):
                try:
                    self._store(self._put_command(item.key, item.value, scope, vector, ttl_ms))
                except Exception as exc:  # a full disk, or close() meanwhile: report how far it got
                    return done, exc
            return len(chunk), None

        return load_in_chunks(bulk_puts(items, self._state.limits), self._embedding, write)

    def _put_command(self, key: str, data: bytes, scope: str, vector: bytes | None, ttl_ms: int) -> Put:
        now = self._clock()
        return Put(key, data, scope, vector, now, now + ttl_ms if ttl_ms else 0)

    def _store(self, command: Put) -> None:
        """Log and apply a put, then account for it: counters, access order, expiry, capacity."""
        self._submit(command)
        with self._lock:
            self._counters["puts"] += 1
            self._access.touch(command.key, command.created_at_ms)
            if command.expires_at_ms:
                self._expiries.add(command.expires_at_ms, command.key, self._state.entries)
            self._evict_if_over_capacity()

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if absent or expired."""
        self._check_open()
        check_key(key, self._state.limits)
        now = self._clock()
        with self._lock:
            entry = self._state.get(key, now)
            self._counters["gets"] += 1
            if entry is None:
                return None
            self._counters["get_hits"] += 1
            self._access.touch(key, now)
            return entry.value

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        check_key(key, self._state.limits)
        with self._lock:
            removed = bool(self._submit_removal(Delete(key), [key]))
            self._counters["deletes"] += 1
        return removed

    def exists(self, key: str) -> bool:
        self._check_open()
        check_key(key, self._state.limits)
        with self._lock:
            return self._state.get(key, self._clock()) is not None

    def scan(self, prefix: str = "", limit: int = 100) -> list[str]:
        """Keys starting with ``prefix``, sorted, at most ``limit``."""
        self._check_open()
        prefix, limit = check_scan_args(prefix, limit)
        with self._lock:
            return self._state.scan(prefix, limit, self._clock())

    def search(
        self,
        query: str | None,
        top_k: int = 5,
        threshold: float | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> list[SearchResult]:
        """Entries whose text is nearest to ``query`` (cosine similarity), best first.

        Returns:
            ``SearchResult(key, value, similarity, node)`` tuples.
        """
        self._check_open()
        check_search_args(top_k, threshold)
        scope = check_scope(scope, self._state.limits)
        query_vector = search_vector(self._embedding, query, vector)
        now = self._clock()
        with self._lock:
            self._check_open()
            matches = self._state.search(query_vector, scope, top_k, threshold, now)
            self._counters["searches"] += 1
            self._counters["search_hits"] += bool(matches)
            for match in matches:
                self._access.touch(match.key, now)
            return [SearchResult(m.key, m.entry.value, m.similarity, self.node_id) for m in matches]

    def clear_scope(self, scope_prefix: str) -> int:
        """Remove every entry in scopes starting with ``scope_prefix``; returns how many."""
        return self._clear(check_scope_prefix(scope_prefix))

    def clear_all(self) -> int:
        """Remove everything; returns how many entries were removed."""
        return self._clear("")

    def set_ef_search(self, ef_search: int) -> None:
        """Use another query-time HNSW ``ef`` from now on: more finds more, at more search time.

        It changes search effort only, never the stored graph (docs/benchmarks/embedded.md
        shows what each value costs and finds at 100K entries).

        >>> from semcache.embeddings import HashEmbedding
        >>> with SemanticKV(embedding=HashEmbedding(dim=8)) as kv:
        ...     kv.set_ef_search(128)
        ...     kv.stats()["ef_search"]
        128

        Raises:
            ConfigurationError: ``ef_search`` is not a positive int.
        """
        whole_number(ef_search, "ef_search", minimum=1, error=ConfigurationError)
        with self._lock:
            self._check_open()
            self._state.set_ef_search(ef_search)

    def _clear(self, scope_prefix: str) -> int:
        with self._lock:
            doomed = [key for key, entry in self._state.entries.items() if entry.scope.startswith(scope_prefix)]
            return self._submit_removal(Clear(scope_prefix), doomed)

    def _submit_removal(self, command: Command, doomed: list[str]) -> int:
        """Apply a command that removes ``doomed`` and drop their local access records."""
        removed = self._submit(command)
        for key in doomed:
            self._access.forget(key)
        return removed

    def stats(self) -> dict[str, Any]:
        """Counters, sizes and settings."""
        with self._lock:
            return {
                "node": self.node_id,
                **self._state.stats(),
                **self._counters,
                "capacity": self._capacity,
                "eviction": self._eviction,
                **self._local.where(),
                "embedding_model_calls": self._embedding.model_calls,
                "embedding_memo_hits": self._embedding.memo_hits,
            }

    def digest(self) -> str:
        """SHA-256 of the replicated state's snapshot: equal digests mean identical stores."""
        with self._lock:
            return self._state.digest()

    def checkpoint(self) -> None:
        """Write a snapshot now and truncate the log (no-op in memory)."""
        self._local.checkpoint()

    def close(self) -> None:
        """Stop the purger, checkpoint (with ``path``) and release the directory (even if that checkpoint fails)."""
        try:
            self._local.close()
        finally:
            self._purger.stop()

    def __enter__(self) -> SemanticKV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._state.entries)

    def __repr__(self) -> str:
        where = self._log.path if self._log else "memory"
        return f"SemanticKV({where}, entries={len(self._state.entries)}, model={self.model_id})"

    # ------------------------------------------------- expiry and eviction
    # What leaves, and the commands that remove it, are decided by the shared
    # driver (semcache._engine.housekeeping); the heap only says cheaply whether
    # anything may have expired, and the counters are this store's.
    def purge_expired(self) -> int:
        """Remove expired entries now (the background thread does this every ``purge_interval``)."""
        now = self._clock()
        with self._lock:
            self._check_open()
            if not self._expiries.due(now):
                return 0
            self._expiries.drop_due(now)
            removed = self._housekeeping.expire(now)
            self._counters["expired"] += removed
            return removed

    def _purge_round(self) -> None:
        """One background purge; a store closed meanwhile has nothing left to purge."""
        try:
            self.purge_expired()
        except ClosedError:
            return

    def _evict_if_over_capacity(self) -> None:
        """Expired entries first, whatever the policy (they are dead already); then evict 1 % below capacity."""
        if not self._housekeeping.over_capacity():
            return
        self.purge_expired()
        self._counters["evicted"] += self._housekeeping.evict_over_capacity()
