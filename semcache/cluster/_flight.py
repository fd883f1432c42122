"""Client RPC over Arrow Flight: the node's server (:class:`FlightNodeServer`) and :class:`NodeClient`.

Every call is one Flight ``do_action`` whose body and reply are frames of
:mod:`semcache.cluster._wire`.  Token auth: when the node has a token, a server
middleware refuses every call whose ``authorization`` header is not
``Bearer <token>`` (compared in constant time) before it reaches a handler.
TLS: ``grpc+tls://`` addresses with the node's certificate and key; clients
pass ``tls_root_certs``.  Transport failures (Flight/gRPC errors) are mapped by
:func:`map_flight_error`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

try:
    import pyarrow.flight as flight
except ImportError as exc:  # pragma: no cover - exercised by the packaging test without the extra
    from semcache.errors import missing_extra

    raise missing_extra("pyarrow", "cluster", "the cluster's RPC transport (Arrow Flight)") from exc

from semcache.cluster._wire import (
    Handler,
    Hits,
    PutItem,
    SearchQuery,
    decode_frame,
    encode_frame,
    encode_put_items,
    error_from_reply,
    error_to_header,
)
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
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


# ------------------------------------------------------------------ server
class _TokenMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Refuse every call without ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> None:
        for value in headers.get("authorization", []):
            offered = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(offered, self._expected):
                return None
        raise flight.FlightUnauthenticatedError("missing or wrong token")


class FlightNodeServer(flight.FlightServerBase):
    """A Flight server that hands every action to ``handler(action, header, blobs)``.

    It starts listening when constructed.  A handler's exception never escapes:
    it becomes an error reply, so a bad request cannot take the node down.
    """

    def __init__(
        self,
        location: str,
        handler: Handler,
        *,
        token: str = "",
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if token:
            kwargs["middleware"] = {"auth": _TokenMiddlewareFactory(token)}
        if tls_cert is not None and tls_key is not None:
            kwargs["tls_certificates"] = [(tls_cert, tls_key)]
        super().__init__(location, **kwargs)
        self._handler = handler

    def do_action(self, context: Any, action: flight.Action) -> list[flight.Result]:
        try:
            header, blobs = decode_frame(action.body.to_pybytes())
            reply, out = self._handler(action.type, header, blobs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
            reply, out = error_to_header(exc), []
        return [flight.Result(encode_frame(reply, out))]

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return [(name, "semcache node action") for name in ACTIONS]


ACTIONS = (
    "put", "put_many", "search_many", "get", "delete", "exists", "scan", "search", "clear", "stats", "health",
    "topology", "add_replica", "remove_replica", "digest", "compact",
)


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

    def call(self, action: str, header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = (),
             *, timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send one action; return the reply header and blobs, or raise the node's error."""
        if self._closed:
            raise ClosedError(f"NodeClient({self.address}) is closed")
        options = self._options
        if timeout is not None:
            options = flight.FlightCallOptions(timeout=timeout, headers=self._options.headers)
        try:
            results = list(self._client.do_action(flight.Action(action, encode_frame(header, blobs)), options))
        except flight.FlightError as exc:
            raise map_flight_error(exc, self.address) from exc
        except OSError as exc:
            raise ShardUnavailableError(f"cannot reach {self.address}: {exc}") from exc
        if not results:
            raise ClusterError(f"{self.address} sent an empty reply to {action}")
        reply, out = decode_frame(results[0].body.to_pybytes())
        if "error" in reply:
            raise error_from_reply(reply)
        return reply, out

    # -------------------------------------------------------------- data
    def put(self, key: str, value: bytes, *, scope: str, vector: bytes | None, ttl_ms: int,
            text: str | None = None) -> None:
        """Store ``value``; returns once the write committed on a majority and applied on the node."""
        header: dict[str, Any] = {"k": key, "s": scope, "t": ttl_ms, "v": vector is not None}
        if text is not None:
            header["x"] = text
        self.call("put", header, [value] if vector is None else [value, vector])

    def put_many(self, items: Sequence[PutItem]) -> list[SemcacheError | None]:
        """Store several puts in one call (they share Raft entries); each one's error, or None once committed.

        Errors that concern the whole call (not the leader, no quorum, unreachable) raise instead.
        """
        header, blobs = encode_put_items(items)
        reply, _ = self.call("put_many", header, blobs)
        errors = reply.get("r")
        if not isinstance(errors, list) or len(errors) != len(items):
            raise ClusterError(f"{self.address} answered put_many with {errors!r}")
        return [None if error is None else error_from_reply(error) for error in errors]

    def get(self, key: str, *, read_from: str = "leader") -> bytes | None:
        reply, blobs = self.call("get", {"k": key, "r": read_from})
        return blobs[0] if reply.get("f") else None

    def delete(self, key: str) -> bool:
        return bool(self.call("delete", {"k": key})[0]["n"])

    def exists(self, key: str, *, read_from: str = "leader") -> bool:
        return bool(self.call("exists", {"k": key, "r": read_from})[0]["f"])

    def scan(self, prefix: str, limit: int, *, read_from: str = "leader") -> list[str]:
        return list(self.call("scan", {"p": prefix, "l": limit, "r": read_from})[0]["keys"])

    def search(self, vector: bytes, *, scope: str, top_k: int, threshold: float | None,
               read_from: str = "leader") -> list[tuple[str, bytes, float]]:
        """The ``top_k`` nearest entries of ``scope`` on this node's shard: ``(key, value, similarity)``."""
        reply, blobs = self.call("search", {"s": scope, "k": top_k, "th": threshold, "r": read_from}, [vector])
        return [(key, blob, float(sim)) for key, blob, sim in zip(reply["keys"], blobs, reply["sims"], strict=True)]

    def search_many(self, queries: Sequence[SearchQuery], *, read_from: str = "leader") -> list[Hits | SemcacheError]:
        """Several searches in one call: each one's hits, or its own error (a bad argument).

        Errors that concern the whole call (not the leader, unreachable) raise instead.
        """
        header = {"r": read_from, "queries": [{"s": q.scope, "k": q.top_k, "th": q.threshold} for q in queries]}
        reply, blobs = self.call("search_many", header, [q.vector for q in queries])
        answers = reply.get("results")
        if not isinstance(answers, list) or len(answers) != len(queries):
            raise ClusterError(f"{self.address} answered search_many with {answers!r}")
        values = iter(blobs)
        out: list[Hits | SemcacheError] = []
        for answer in answers:
            if "error" in answer:
                out.append(error_from_reply(answer))
            else:
                out.append([(key, next(values), float(sim)) for key, sim in zip(answer["keys"], answer["sims"],
                                                                                  strict=True)])
        return out

    def clear(self, scope_prefix: str) -> int:
        return int(self.call("clear", {"p": scope_prefix})[0]["n"])

    # -------------------------------------------------------------- admin
    def stats(self) -> dict[str, Any]:
        return self.call("stats", {})[0]

    def health(self) -> dict[str, Any]:
        return self.call("health", {})[0]

    def topology(self) -> dict[str, Any]:
        return self.call("topology", {})[0]

    def digest(self) -> dict[str, Any]:
        """``{"applied": commands applied, "digest": sha256}`` of this replica's state."""
        return self.call("digest", {})[0]

    def add_replica(self, replica_id: str, raft: str, rpc: str) -> None:
        self.call("add_replica", {"id": replica_id, "raft": raft, "rpc": rpc}, timeout=max(self.timeout, 10.0))

    def remove_replica(self, replica_id: str) -> None:
        self.call("remove_replica", {"id": replica_id}, timeout=max(self.timeout, 10.0))

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
