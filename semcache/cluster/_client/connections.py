"""The client's connections to nodes: one per node address, opened on first use, closed together.

The transport is a seam: ``connect(address) -> NodeConnection`` (default:
:class:`semcache.cluster._flight.NodeClient` over Arrow Flight), so the routing,
merging and retry logic is tested in-process with a fake.

>>> opened = []
>>> class Node:
...     def __init__(self, address): self.address = address
...     def health(self): return {"role": "leader"}
...     def close(self): opened.remove(self.address)
>>> pool = ConnectionPool(lambda address: opened.append(address) or Node(address))
>>> pool.get("fake://a") is pool.get("fake://a"), opened
(True, ['fake://a'])
>>> pool.health_of("fake://a")
{'rpc': 'fake://a', 'role': 'leader'}
>>> pool.close(), opened, pool.closed
(True, [], True)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from semcache.cluster._wire import Hits, PutItem, SearchQuery
from semcache.errors import ClosedError, ClusterError, SemcacheError


class NodeConnection(Protocol):
    """What the client calls on one node (``semcache.cluster._flight.NodeClient`` has it all)."""

    def put(self, key: str, value: bytes, *, scope: str, vector: bytes | None, ttl_ms: int) -> None: ...
    def put_many(self, items: Sequence[PutItem]) -> list[SemcacheError | None]: ...
    def search_many(
        self, queries: Sequence[SearchQuery], *, read_from: str = "leader"
    ) -> list[Hits | SemcacheError]: ...
    def get(self, key: str, *, read_from: str = "leader") -> bytes | None: ...
    def delete(self, key: str) -> bool: ...
    def exists(self, key: str, *, read_from: str = "leader") -> bool: ...
    def scan(self, prefix: str, limit: int, *, read_from: str = "leader") -> list[str]: ...
    def search(
        self, vector: bytes, *, scope: str, top_k: int, threshold: float | None, read_from: str = "leader"
    ) -> list[tuple[str, bytes, float]]: ...
    def clear(self, scope_prefix: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...
    def topology(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


Connect = Callable[[str], NodeConnection]


def default_connect(
    token: str | None, timeout: float, tls_root_certs: bytes | None
) -> Connect:  # pragma: no cover - exercised by the cluster tests
    """``address -> NodeClient`` over Arrow Flight with these credentials (pyarrow loads on the first call)."""

    def connect(address: str) -> NodeConnection:
        from semcache.cluster._flight import NodeClient

        return NodeClient(address, token=token, timeout=timeout, tls_root_certs=tls_root_certs)

    return connect


class ConnectionPool:
    """One open connection per node address, made by ``connect`` on first use; :meth:`close` closes them all.

    Args:
        connect: ``address -> NodeConnection``.
        owner: what to call the closed thing in :class:`~semcache.errors.ClosedError`.
    """

    def __init__(self, connect: Connect, *, owner: str = "this connection pool") -> None:
        self._connect = connect
        self._owner = owner
        self._lock = threading.Lock()
        self._connections: dict[str, NodeConnection] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raises:
        ClosedError: :meth:`close` was called.
        """
        if self._closed:
            raise ClosedError(f"{self._owner} is closed")

    def get(self, address: str) -> NodeConnection:
        """The connection to ``address``, opened now if it is the first use.

        Raises:
            ClosedError: the pool is closed.
            ShardUnavailableError: the connection cannot be opened.
        """
        with self._lock:
            self.check_open()
            connection = self._connections.get(address)
            if connection is None:
                connection = self._connections[address] = self._connect(address)
            return connection

    def health_of(self, address: str) -> dict[str, Any]:
        """The node's health dict with its ``rpc`` address; ``healthy: False`` and ``error`` when it did not answer."""
        try:
            return {"rpc": address, **self.get(address).health()}
        except ClusterError as exc:
            return {"rpc": address, "healthy": False, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> bool:
        """Close every connection (best effort: a node may be gone); later use raises ClosedError.

        Returns:
            True if this call closed the pool, False if it was closed already.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()
        return True

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
