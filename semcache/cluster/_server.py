"""The node's RPC server: Arrow Flight's ``DoAction`` protocol, served by grpcio with bounded resources.

Clients talk to a node with pyarrow's Flight client
(:class:`~semcache.cluster._flight.NodeClient`); every call is a Flight
``DoAction`` (``/arrow.flight.protocol.FlightService/DoAction``: an ``Action``
message in, a stream of ``Result`` messages out), whose body is a frame of
:mod:`semcache.cluster._wire`.  The server side is grpcio rather than
``pyarrow.flight.FlightServerBase`` because pyarrow's server exposes no gRPC
option: Arrow sets an unlimited message size, so a 1 GiB body was buffered
before any token check, and the sync gRPC server grew one thread per
concurrent call, each taking the GIL for the Python token check (2,000
unauthenticated calls starved the Raft tick thread and deposed the leader).
grpcio gives every limit below at the transport (:class:`RpcLimits`):

* ``max_request_bytes``: gRPC refuses a larger message (``RESOURCE_EXHAUSTED``)
  as its length prefix arrives, before buffering it.
* ``max_metadata_bytes``: larger call metadata (headers) is refused by gRPC.
* ``max_concurrent_calls``: calls past it are refused at once
  (``RESOURCE_EXHAUSTED``) by grpcio's one serving thread, without a worker.
* ``workers``: the thread pool that runs calls; the process never has more
  RPC threads than this, whatever the load.

Tokens: a call whose ``authorization`` metadata is neither ``Bearer <token>``
nor ``Bearer <admin token>`` is refused (``UNAUTHENTICATED``) before its body
is read by a handler; an admin action (:data:`~semcache.cluster._wire.ADMIN_ACTIONS`)
also needs the admin token (:class:`Credentials`).  Every Flight method other
than ``DoAction`` and ``ListActions`` answers ``UNIMPLEMENTED`` with a short
message; a handler's exception becomes an error reply, never a traceback.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

try:
    import grpc
except ImportError as exc:  # pragma: no cover - exercised by the packaging test without the extra
    from semcache.errors import missing_extra

    raise missing_extra("grpcio", "cluster", "the node's RPC server") from exc

from semcache.cluster._sizes import MAX_METADATA_BYTES, MAX_REQUEST_BYTES
from semcache.cluster._wire import (
    ACTIONS,
    ADMIN_ACTIONS,
    Handler,
    decode_request,
    encode_frame,
    error_to_header,
)
from semcache.errors import AuthenticationError, ConfigurationError, InvalidInputError

logger = logging.getLogger(__name__)

SERVICE = "/arrow.flight.protocol.FlightService/"
DEFAULT_WORKERS = 16
DEFAULT_MAX_CONCURRENT_CALLS = 256
DEFAULT_STREAMS_PER_CONNECTION = 128
# The Action message around a frame adds its type (an action name) and two field tags.
_ACTION_OVERHEAD = 1024


@dataclass(frozen=True)
class RpcLimits:
    """What one node's RPC server bounds (see the module docstring and docs/operations/security.md).

    Args:
        max_request_bytes: largest request frame; gRPC refuses a larger message as it arrives.
        max_metadata_bytes: largest metadata (headers) of one call.
        max_concurrent_calls: calls running or queued at once; more are refused at once (retryable).
        workers: threads that run calls.
        streams_per_connection: concurrent calls on one client connection (HTTP/2 streams).
    """

    max_request_bytes: int = MAX_REQUEST_BYTES
    max_metadata_bytes: int = MAX_METADATA_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    workers: int = DEFAULT_WORKERS
    streams_per_connection: int = DEFAULT_STREAMS_PER_CONNECTION

    def grpc_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", self.max_request_bytes + _ACTION_OVERHEAD),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_concurrent_streams", self.streams_per_connection),
            ("grpc.so_reuseport", 0),  # a second node on a taken port must fail, not share it
        ]


@dataclass(frozen=True)
class Credentials:
    """The tokens a node accepts.

    ``token`` admits data calls; ``admin_token`` admits every call, admin
    actions included.  Without a data token, data calls are open; without an
    admin token, admin actions need the data token; without either, the port
    is open to anyone who can reach it.

    >>> creds = Credentials(token="d", admin_token="a")
    >>> creds.admits("Bearer d"), creds.admits("Bearer a"), creds.admits("Bearer x")
    (True, True, False)
    >>> creds.admits_admin("Bearer d"), creds.admits_admin("Bearer a")
    (False, True)
    >>> open_data = Credentials(token="", admin_token="a")
    >>> open_data.admits(None), open_data.admits_admin(None), open_data.admits_admin("Bearer a")
    (True, False, True)
    """

    token: str = ""
    admin_token: str = ""

    def admits(self, offered: str | None) -> bool:
        """Whether ``authorization: <offered>`` may make data calls."""
        if not self.token:
            return True
        return any(_bearer_matches(offered, t) for t in (self.token, self.admin_token) if t)

    def admits_admin(self, offered: str | None) -> bool:
        """Whether ``authorization: <offered>`` may make admin calls."""
        if self.admin_token:
            return _bearer_matches(offered, self.admin_token)
        return self.admits(offered)


def _bearer_matches(offered: str | None, token: str) -> bool:
    expected = f"Bearer {token}".encode()
    return offered is not None and hmac.compare_digest(offered.encode(), expected)


# ------------------------------------------------------- protobuf, by hand
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint too long")


def parse_action(data: bytes) -> tuple[str, bytes]:
    """Flight's ``Action`` message (``string type = 1; bytes body = 2``) as ``(type, body)``.

    >>> parse_action(b"\\x0a\\x03get\\x12\\x02hi")
    ('get', b'hi')

    Raises:
        InvalidInputError: not an ``Action`` message.
    """
    fields: dict[int, bytes] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, kind = key >> 3, key & 7
            if kind == 0:
                _, pos = _read_varint(data, pos)
                continue
            if kind != 2:
                raise ValueError(f"unexpected wire type {kind}")
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            fields[number] = data[pos:pos + size]
            pos += size
        return fields.get(1, b"").decode("utf-8"), fields.get(2, b"")
    except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInputError(f"malformed Flight Action: {exc}") from exc


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def encode_result(body: bytes) -> bytes:
    """Flight's ``Result`` message (``bytes body = 1``)."""
    return _bytes_field(1, body)


def encode_action_type(name: str, description: str) -> bytes:
    """Flight's ``ActionType`` message (``string type = 1; string description = 2``)."""
    return _bytes_field(1, name.encode()) + _bytes_field(2, description.encode())


# ------------------------------------------------------------------ server
class FlightNodeServer:
    """A gRPC server speaking Flight's ``DoAction``: every action goes to ``handler(action, header, blobs)``.

    It starts listening when constructed.  A request of another wire version is
    refused before the handler (:func:`~semcache.cluster._wire.decode_request`).
    A handler's exception never escapes: it becomes an error reply.

    Args:
        location: ``grpc://host:port`` or ``grpc+tls://host:port``.
        handler: runs one action.
        token, admin_token: see :class:`Credentials`.
        tls_cert, tls_key: PEM certificate and key, for ``grpc+tls://``.
        limits: the transport limits.

    Raises:
        ConfigurationError: the address cannot be listened on (taken, or not this host's).
    """

    def __init__(
        self,
        location: str,
        handler: Handler,
        *,
        token: str = "",
        admin_token: str = "",
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
        limits: RpcLimits | None = None,
    ) -> None:
        self.limits = limits or RpcLimits()
        self._handler = handler
        self._credentials = Credentials(token, admin_token)
        address = location.split("://", 1)[-1]
        self._workers = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=f"semcache-rpc {address}")
        self._server = grpc.server(
            self._workers,
            handlers=[_Methods(self)],
            options=self.limits.grpc_options(),
            maximum_concurrent_rpcs=self.limits.max_concurrent_calls,
        )
        try:
            if tls_cert is not None and tls_key is not None:
                port = self._server.add_secure_port(address, grpc.ssl_server_credentials([(tls_key, tls_cert)]))
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen on {location}: {exc}") from exc
        if not port:
            raise ConfigurationError(f"cannot listen on {location}")
        self.port = port
        self._server.start()

    # ----------------------------------------------------------- methods
    def do_action(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """One ``DoAction``: decode the frame, check an admin action's token, run the handler; one ``Result``.

        Served as a unary method: on the wire a server stream of one message is the same, and grpcio sends
        the message and the status in one batch (measured: about 0.04 ms less per call than a stream).
        """
        try:
            action, body = parse_action(request)
            if action in ADMIN_ACTIONS and not self._credentials.admits_admin(_authorization(context)):
                raise AuthenticationError(f"{action} is an admin action: it needs the cluster's admin token")
            header, blobs = decode_request(body)
            reply, out = self._handler(action, header, blobs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
            reply, out = error_to_header(exc), []
        return encode_result(encode_frame(reply, out))

    def list_actions(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for name, description in ACTIONS.items():
            yield encode_action_type(name, description)

    def admits(self, metadata: Any) -> bool:
        """Whether a call with this invocation metadata may run at all."""
        return self._credentials.admits(_authorization_of(metadata))

    # ---------------------------------------------------------- lifecycle
    def shutdown(self, grace: float | None = 1.0) -> None:
        """Stop listening and end running calls after ``grace`` seconds; waits until stopped."""
        self._server.stop(grace).wait()
        self._workers.shutdown(wait=False)

    def wait(self) -> None:
        self._server.wait_for_termination()


def _authorization_of(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


def _authorization(context: grpc.ServicerContext) -> str | None:
    return _authorization_of(context.invocation_metadata())


def _refuse_unauthenticated(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class _Methods(grpc.GenericRpcHandler):
    """Routes calls by method name (on grpcio's serving thread): DoAction, ListActions, or UNIMPLEMENTED."""

    def __init__(self, server: FlightNodeServer) -> None:
        self._server = server
        self._methods = {
            SERVICE + "DoAction": grpc.unary_unary_rpc_method_handler(server.do_action),
            SERVICE + "ListActions": grpc.unary_stream_rpc_method_handler(server.list_actions),
        }
        self._refuse = grpc.unary_unary_rpc_method_handler(_refuse_unauthenticated)

    def service(self, handler_call_details: Any) -> Any:
        method = self._methods.get(handler_call_details.method)
        if method is None:
            return None  # grpcio answers UNIMPLEMENTED, "Method not found!"
        if not self._server.admits(handler_call_details.invocation_metadata):
            return self._refuse
        return method
