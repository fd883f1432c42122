"""The backend interface: what :class:`~semcache._cache.cache.SemanticCache` needs of a store.

The embedded :class:`~semcache._engine.kv.SemanticKV` and the cluster client
:class:`~semcache.cluster._client.DistributedSemanticKV` both satisfy it, so the cache,
and the LangChain and OpenAI adapters above it, run unchanged on either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from semcache.embeddings import BaseEmbedding

# What put_many takes: ``{key: value}``, or ``(key, value)`` / ``(key, value, text)`` tuples.
BulkItems = Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str] | tuple[str, bytes | str, str | None]]


class SearchResult(NamedTuple):
    """One semantic-search hit; unpacks as ``key, value, similarity, node`` as in the seed."""

    key: str
    value: bytes
    similarity: float
    node: str


@runtime_checkable
class Backend(Protocol):
    """A semantic key-value store partitioned into scopes.

    ``scope`` names a hard partition: each scope has its own vector index, so a
    search in one scope cannot see another's vectors.  ``vector`` lets a caller
    that has already embedded the text pass the vector instead of the text.
    """

    @property
    def embedding(self) -> BaseEmbedding: ...

    def put(
        self,
        key: str,
        value: bytes | str,
        ttl_ms: int = 0,
        text: str | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> bool: ...

    def put_many(
        self,
        items: BulkItems,
        ttl_ms: int = 0,
        *,
        scope: str | None = None,
    ) -> int: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> bool: ...

    def scan(self, prefix: str = "", limit: int = 100) -> list[str]: ...

    def search(
        self,
        query: str | None,
        top_k: int = 5,
        threshold: float | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> list[SearchResult]: ...

    def clear_scope(self, scope_prefix: str) -> int: ...

    def clear_all(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
