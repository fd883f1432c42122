"""The seed API's calls checked and embedded, the same way for the embedded store and the cluster client.

:class:`~semcache.SemanticKV` and :class:`~semcache.DistributedSemanticKV` take
the same ``put``/``put_many``/``search`` arguments and must refuse bad ones with
the same errors, in the same order, before paying for an embedding or a network
call.  :class:`CallChecks` does that once for both; each store then does its
own part with the result (a command on its local state, or a request to a shard).

>>> from semcache._engine.inputs import Limits
>>> from semcache.embeddings import HashEmbedding
>>> calls = CallChecks(HashEmbedding(dim=8), Limits())
>>> put = calls.put("doc:1", "refund policy", 0, None, None, None)
>>> put.key, put.value, put.scope, len(put.vector)
('doc:1', b'refund policy', '', 32)
>>> calls.put("doc:1", "x", -1, None, None, None)
Traceback (most recent call last):
    ...
semcache.errors.InvalidInputError: ttl_ms must be an int >= 0 (0 = no expiry), got -1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from semcache._engine.backend import BulkItems
from semcache._engine.bulk import BulkPut, bulk_puts, load_in_chunks
from semcache._engine.inputs import (
    Limits,
    check_key,
    check_scope,
    check_search_args,
    check_ttl_ms,
    check_value_size,
    coerce_value,
    put_vector,
    search_vector,
)
from semcache.embeddings import BaseEmbedding


@dataclass(frozen=True)
class CheckedPut:
    """One put, checked: its key, value bytes, scope, vector bytes (None: not searchable) and time to live."""

    key: str
    value: bytes
    scope: str
    vector: bytes | None
    ttl_ms: int


# Stores a chunk of checked puts: how many were stored, and the error that stopped the rest (or None).
PutWriter = Callable[[list[CheckedPut]], tuple[int, BaseException | None]]


@dataclass(frozen=True)
class CallChecks:
    """Checks a store's ``put``, ``put_many`` and ``search`` arguments and embeds what they need.

    Attributes:
        embedding: the store's embedder (texts and queries are embedded with it,
            given vectors checked against its dimension).
        limits: key and value sizes.
        scope_limits: scope name sizes (None: the default limit; the cluster
            client leaves scopes to the nodes' limit).
    """

    embedding: BaseEmbedding
    limits: Limits
    scope_limits: Limits | None = None

    def put(self, key: str, value: bytes | str, ttl_ms: int, text: str | None, scope: str | None,
            vector: np.ndarray | None) -> CheckedPut:
        """A ``put``'s arguments checked, value size before the embedding is paid for."""
        check_key(key, self.limits)
        data = coerce_value(value)
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope, self.scope_limits)
        check_value_size(data, self.limits)  # before paying for the embedding
        return CheckedPut(key, data, scope, put_vector(self.embedding, data, text, vector), ttl_ms)

    def put_many(self, items: BulkItems, ttl_ms: int, scope: str | None, write: PutWriter) -> int:
        """Check every item of a ``put_many``, then embed and ``write`` them a chunk at a time; how many were stored.

        Raises:
            InvalidInputError: a bad item (named by its position), TTL or scope: nothing is written.
            Exception: the embedder or ``write`` failed midway (see :func:`~semcache._engine.bulk.load_in_chunks`).
        """
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope, self.scope_limits)

        def write_chunk(chunk: list[BulkPut], vectors: list[bytes | None]) -> tuple[int, BaseException | None]:
            return write([CheckedPut(item.key, item.value, scope, vector, ttl_ms)
                          for item, vector in zip(chunk, vectors, strict=True)])

        return load_in_chunks(bulk_puts(items, self.limits), self.embedding, write_chunk)

    def search(self, query: str | None, top_k: int, threshold: float | None, scope: str | None,
               vector: np.ndarray | None) -> tuple[np.ndarray, str]:
        """A ``search``'s arguments checked: the query vector (embedded unless given) and the scope."""
        check_search_args(top_k, threshold)
        scope = check_scope(scope, self.scope_limits)
        return search_vector(self.embedding, query, vector), scope
