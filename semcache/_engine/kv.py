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

The parts: :mod:`~semcache._engine.calls` checks every argument and embeds (the
same checks as the cluster client's), :mod:`~semcache._engine.local_calls` runs
the checked call on the state and counts it, :mod:`~semcache._engine.local_store`
holds the state, its lock and its log, and
:mod:`~semcache._engine.local_housekeeping` expires and evicts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semcache._engine.backend import BulkItems, SearchResult
from semcache._engine.calls import CallChecks
from semcache._engine.clock import SteadyClock
from semcache._engine.conveniences import Conveniences
from semcache._engine.eviction import check_policy
from semcache._engine.index import IndexSettings
from semcache._engine.inputs import (
    Limits,
    check_key,
    check_scan_args,
    check_scope_prefix,
    positive_seconds,
    whole_number,
)
from semcache._engine.local_calls import LocalCalls
from semcache._engine.local_housekeeping import LocalHousekeeping
from semcache._engine.local_store import DEFAULT_CHECKPOINT_BYTES, LocalState
from semcache._engine.state import ShardState
from semcache._engine.storage import DurableLog
from semcache.embeddings import as_embedding
from semcache.errors import ConfigurationError


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
        policy = check_policy(eviction)
        clock = clock or SteadyClock()
        self.node_id = node_id
        self._local = LocalState(
            path, self._embedding, IndexSettings(max_entries, hnsw_m, hnsw_ef_construction, ef_search), limits,
            fsync=fsync, checkpoint_bytes=checkpoint_bytes,
        )
        self._checks = CallChecks(self._embedding, self._state.limits, scope_limits=self._state.limits)
        self._housekeeping = LocalHousekeeping(self._local, clock, policy=policy, capacity=capacity,
                                               purge_interval=purge_interval)
        self._calls = LocalCalls(self._local, clock, self._housekeeping)

    # ------------------------------------------------------------- shape
    @property
    def limits(self) -> Limits:
        return self._state.limits

    @property
    def _state(self) -> ShardState:
        return self._local.state

    @property
    def _log(self) -> DurableLog | None:
        return self._local.log

    def _check_open(self) -> None:
        self._local.check_open()

    # ----------------------------------------------------------------- API
    def put(self, key: str, value: bytes | str, ttl_ms: int = 0, text: str | None = None, *,
            scope: str | None = None, vector: np.ndarray | None = None) -> bool:
        """Store ``value`` under ``key``, searchable by ``text`` (default: the value as UTF-8).

        Args:
            ttl_ms: time to live in milliseconds; 0 keeps it until deleted or evicted.
            scope: the index partition to search it in (default: the shared one).
            vector: a precomputed embedding, used instead of embedding ``text``.

        Raises:
            InvalidInputError: bad key, value, TTL, text or vector (nothing is stored).
        """
        self._check_open()
        self._calls.store(self._checks.put(key, value, ttl_ms, text, scope, vector))
        return True

    def put_many(self, items: BulkItems, ttl_ms: int = 0, *, scope: str | None = None) -> int:
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
        return self._checks.put_many(items, ttl_ms, scope, self._calls.store_in_order)

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if absent or expired."""
        self._check_open()
        check_key(key, self._state.limits)
        return self._calls.get(key)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        check_key(key, self._state.limits)
        return self._calls.delete(key)

    def exists(self, key: str) -> bool:
        self._check_open()
        check_key(key, self._state.limits)
        return self._calls.exists(key)

    def scan(self, prefix: str = "", limit: int = 100) -> list[str]:
        """Keys starting with ``prefix``, sorted, at most ``limit``."""
        self._check_open()
        prefix, limit = check_scan_args(prefix, limit)
        return self._calls.scan(prefix, limit)

    def search(self, query: str | None, top_k: int = 5, threshold: float | None = None, *,
               scope: str | None = None, vector: np.ndarray | None = None) -> list[SearchResult]:
        """Entries whose text is nearest to ``query`` (cosine similarity), best first.

        Returns:
            ``SearchResult(key, value, similarity, node)`` tuples.
        """
        self._check_open()
        query_vector, scope = self._checks.search(query, top_k, threshold, scope, vector)
        matches = self._calls.search(query_vector, scope, top_k, threshold)
        return [SearchResult(m.key, m.entry.value, m.similarity, self.node_id) for m in matches]

    def clear_scope(self, scope_prefix: str) -> int:
        """Remove every entry in scopes starting with ``scope_prefix``; returns how many."""
        return self._calls.clear(check_scope_prefix(scope_prefix))

    def clear_all(self) -> int:
        """Remove everything; returns how many entries were removed."""
        return self._calls.clear("")

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
        with self._local.lock:
            self._check_open()
            self._state.set_ef_search(ef_search)

    def stats(self) -> dict[str, Any]:
        """Counters, sizes and settings."""
        with self._local.lock:
            return {
                "node": self.node_id,
                **self._state.stats(),
                **self._calls.counters,
                **self._housekeeping.counts(),
                **self._local.where(),
                "embedding_model_calls": self._embedding.model_calls,
                "embedding_memo_hits": self._embedding.memo_hits,
            }

    def digest(self) -> str:
        """SHA-256 of the replicated state's snapshot: equal digests mean identical stores."""
        with self._local.lock:
            return self._state.digest()

    def checkpoint(self) -> None:
        """Write a snapshot now and truncate the log (no-op in memory)."""
        self._local.checkpoint()

    def close(self) -> None:
        """Stop the purger, checkpoint (with ``path``) and release the directory (even if that checkpoint fails)."""
        try:
            self._local.close()
        finally:
            self._housekeeping.stop()

    def __len__(self) -> int:
        return len(self._state.entries)

    def __repr__(self) -> str:
        where = self._log.path if self._log else "memory"
        return f"SemanticKV({where}, entries={len(self._state.entries)}, model={self.model_id})"

    def purge_expired(self) -> int:
        """Remove expired entries now (the background thread does this every ``purge_interval``)."""
        return self._housekeeping.purge_expired()
