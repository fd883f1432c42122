"""Client RPC over Arrow Flight: :class:`NodeClient`, one connection to one node.

Every call is one Flight ``do_action`` whose body and reply are frames of
:mod:`semcache.cluster._wire`; the node's side is :mod:`semcache.cluster._server`.
The client sends ``authorization: Bearer <token>`` on every call when it has a
token.  TLS: ``grpc+tls://`` addresses; clients pass ``tls_root_certs``.
Transport failures (Flight/gRPC errors) are mapped by :func:`map_flight_error`;
a request over :data:`~semcache.cluster._sizes.MAX_REQUEST_BYTES` is refused
before it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import pyarrow
    import pyarrow.flight as flight
except ImportError as exc:  # pragma: no cover - exercised by the packaging test without the extra
    from semcache.errors import missing_extra

    raise missing_extra("pyarrow", "cluster", "the cluster's RPC transport (Arrow Flight)") from exc

from semcache.cluster._config import Replica
from semcache.cluster._sizes import MAX_REQUEST_BYTES
from semcache.cluster._wire import (
    COUNT,
    ERROR,
    ERRORS,
    FOUND,
    KEYS,
    READ_FROM,
    REMOVED,
    REPLICA_ID,
    SCOPE_PREFIX,
    Header,
    Hits,
    KeyRequest,
    PutItem,
    ScanRequest,
    SearchQuery,
    decode_frame,
    decode_hits,
    decode_search_results,
    encode_put_many,
    encode_request,
    encode_search_many,
    error_from_reply,
    replica_header,
)
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    LimitExceededError,
    SemcacheError,
    ShardUnavailableError,
)


def map_flight_error(exc: flight.FlightError, address: str) -> SemcacheError:
    """Turn a Flight/gRPC failure into the most specific :mod:`semcache.errors` class."""
    if isinstance(exc, flight.FlightUnauthenticatedError | flight.FlightUnauthorizedError):
        return AuthenticationError(f"{address} refused the call: missing or wrong token")
    if isinstance(exc, flight.FlightTimedOutError):
        return ShardUnavailableError(f"{address} did not answer in time: {exc}")
    if isinstance(exc, flight.FlightUnavailableError | flight.FlightCancelledError):
        return ShardUnavailableError(f"cannot reach {address}: {exc}")
    return ClusterError(f"{address} failed the call: {exc}")


def map_transport_refusal(exc: Exception, address: str) -> SemcacheError:
    """A gRPC status pyarrow reports as a plain Arrow error (``ArrowInvalid``...), mapped like a Flight error.

    ``RESOURCE_EXHAUSTED`` (the node is at its concurrent-call limit) is retryable: the call never ran.
    """
    if "resource exhausted" in str(exc).lower():
        return ShardUnavailableError(f"{address} refused the call for lack of resources (busy: at its "
                                     f"concurrent-call limit): {exc}")
    return ClusterError(f"{address} failed the call: {exc}")


# ------------------------------------------------------------------ client
class NodeClient:
    """A connection to one node's RPC address.

    Args:
        address: ``grpc://host:port`` (or ``grpc+tls://``).
        token: the cluster's RPC token, if it has one.
        timeout: seconds before a call gives up with :class:`ShardUnavailableError`.
        tls_root_certs: PEM roots to trust for ``grpc+tls://``.

    Example::

        client = NodeClient("grpc://127.0.0.1:8815", token="t")
        client.put("k", b"v", scope="", vector=None, ttl_ms=0)   # NotLeaderError on a follower
        client.get("k")
    """

    def __init__(
        self, address: str, *, token: str | None = None, timeout: float = 2.0, tls_root_certs: bytes | None = None
    ) -> None:
        self.address = address
        self.timeout = timeout
        kwargs: dict[str, Any] = {}
        if tls_root_certs is not None:
            kwargs["tls_root_certs"] = tls_root_certs
        try:
            self._client = flight.FlightClient(address, **kwargs)
        except (flight.FlightError, OSError, ValueError) as exc:
            raise ShardUnavailableError(f"cannot open a connection to {address}: {exc}") from exc
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self._options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        self._closed = False

    def call(self, action: str, header: Header, blobs: list[bytes] | tuple[bytes, ...] = (),
             *, timeout: float | None = None) -> tuple[Header, list[bytes]]:
        """Send one action (with this client's wire version); return the reply header and blobs, or raise the
        node's error."""
        if self._closed:
            raise ClosedError(f"NodeClient({self.address}) is closed")
        options = self._options
        if timeout is not None:
            options = flight.FlightCallOptions(timeout=timeout, headers=self._options.headers)
        body = encode_request(header, blobs)
        if len(body) > MAX_REQUEST_BYTES:  # the node would refuse it as it arrives
            raise LimitExceededError(f"{action} request", len(body), MAX_REQUEST_BYTES)
        try:
            results = list(self._client.do_action(flight.Action(action, body), options))
        except flight.FlightError as exc:
            raise map_flight_error(exc, self.address) from exc
        except OSError as exc:
            raise ShardUnavailableError(f"cannot reach {self.address}: {exc}") from exc
        except pyarrow.ArrowException as exc:  # gRPC statuses Flight has no class for (RESOURCE_EXHAUSTED...)
            raise map_transport_refusal(exc, self.address) from exc
        if not results:
            raise ClusterError(f"{self.address} sent an empty reply to {action}")
        reply, out = decode_frame(results[0].body.to_pybytes())
        if ERROR in reply:
            raise error_from_reply(reply)
        return reply, out

    # -------------------------------------------------------------- data
    def put(self, key: str, value: bytes, *, scope: str, vector: bytes | None, ttl_ms: int,
            text: str | None = None) -> None:
        """Store ``value``; returns once the write committed on a majority and applied on the node."""
        item = PutItem(key, value, scope, vector, ttl_ms, text)
        self.call("put", item.header(), item.blobs())

    def put_many(self, items: Sequence[PutItem]) -> list[SemcacheError | None]:
        """Store several puts in one call (they share Raft entries); each one's error, or None once committed.

        Errors that concern the whole call (not the leader, no quorum, unreachable) raise instead.
        """
        header, blobs = encode_put_many(items)
        reply, _ = self.call("put_many", header, blobs)
        errors = reply.get(ERRORS)
        if not isinstance(errors, list) or len(errors) != len(items):
            raise ClusterError(f"{self.address} answered put_many with {errors!r}")
        return [None if error is None else error_from_reply(error) for error in errors]

    def get(self, key: str, *, read_from: str = "leader") -> bytes | None:
        reply, blobs = self.call("get", KeyRequest(key, read_from).header())
        return blobs[0] if reply.get(FOUND) else None

    def delete(self, key: str) -> bool:
        return bool(self.call("delete", KeyRequest(key).header())[0][REMOVED])

    def exists(self, key: str, *, read_from: str = "leader") -> bool:
        return bool(self.call("exists", KeyRequest(key, read_from).header())[0][FOUND])

    def scan(self, prefix: str, limit: int, *, read_from: str = "leader") -> list[str]:
        return list(self.call("scan", ScanRequest(prefix, limit, read_from).header())[0][KEYS])

    def search(self, vector: bytes, *, scope: str, top_k: int, threshold: float | None,
               read_from: str = "leader") -> list[tuple[str, bytes, float]]:
        """The ``top_k`` nearest entries of ``scope`` on this node's shard: ``(key, value, similarity)``."""
        query = SearchQuery(vector, scope, top_k, threshold)
        reply, blobs = self.call("search", {**query.header(), READ_FROM: read_from}, [vector])
        return decode_hits(reply, iter(blobs))

    def search_many(self, queries: Sequence[SearchQuery], *, read_from: str = "leader") -> list[Hits | SemcacheError]:
        """Several searches in one call: each one's hits, or its own error (a bad argument).

        Errors that concern the whole call (not the leader, unreachable) raise instead.
        """
        reply, blobs = self.call("search_many", *encode_search_many(queries, read_from))
        answers = decode_search_results(reply, blobs)
        if answers is None or len(answers) != len(queries):
            raise ClusterError(f"{self.address} answered search_many with {reply!r}")
        return answers

    def clear(self, scope_prefix: str) -> int:
        return int(self.call("clear", {SCOPE_PREFIX: scope_prefix})[0][COUNT])

    # -------------------------------------------------------------- admin
    def stats(self) -> dict[str, Any]:
        return self.call("stats", {})[0]

    def health(self) -> dict[str, Any]:
        return self.call("health", {})[0]

    def topology(self) -> dict[str, Any]:
        """The node's :class:`~semcache.cluster._wire.Topology` reply, as a header (read it with
        ``Topology.from_header``)."""
        return self.call("topology", {})[0]

    def digest(self) -> dict[str, Any]:
        """``{"applied": commands applied, "digest": sha256}`` of this replica's state."""
        return self.call("digest", {})[0]

    def add_replica(self, replica_id: str, raft: str, rpc: str) -> None:
        self.call("add_replica", replica_header(Replica(replica_id, raft, rpc)), timeout=max(self.timeout, 10.0))

    def remove_replica(self, replica_id: str) -> None:
        self.call("remove_replica", {REPLICA_ID: replica_id}, timeout=max(self.timeout, 10.0))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NodeClient({self.address!r})"
