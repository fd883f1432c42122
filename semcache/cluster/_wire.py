"""The client-node wire format: request records, frames and error codes (no transport here).

Every call is one Flight ``do_action``.  The action type names the operation
(``put``, ``get``, ``search``...) and the body is a compact frame: a small JSON
header followed by raw binary blobs (values and float32 vectors travel as
bytes, never as JSON).  The reply is one Flight result holding a frame in the
same format.  Application errors travel *inside* the reply frame as an error
code, which :func:`error_from_reply` turns back into the matching
:mod:`semcache.errors` class, so the client sees ``NotLeaderError`` with its
``leader_hint``, ``LimitExceededError`` with its limit, and so on.  Transport
failures (Flight/gRPC errors) are mapped by :func:`map_flight_error`.

Frame layout (little-endian)::

    u32 header length | header (UTF-8 JSON object) | u32 blob count | (u32 length | blob)*

>>> frame = encode_frame({"k": "key"}, [b"value"])
>>> decode_frame(frame)
({'k': 'key'}, [b'value'])

Token auth: when the node has a token, a server middleware refuses every call
whose ``authorization`` header is not ``Bearer <token>`` (compared in constant
time) before it reaches a handler.  TLS: ``grpc+tls://`` addresses with the
node's certificate and key; clients pass ``tls_root_certs``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    CorruptDataError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
    UnknownScopeError,
)

_U32 = struct.Struct("<I")

# Error code on the wire <-> exception class.  Order matters when encoding:
# the most specific class that matches wins (subclasses before their parents).
ERROR_CODES: dict[str, type[SemcacheError]] = {
    "limit_exceeded": LimitExceededError,
    "unknown_scope": UnknownScopeError,
    "invalid_input": InvalidInputError,
    "embedding_mismatch": EmbeddingMismatchError,
    "corrupt_data": CorruptDataError,
    "configuration": ConfigurationError,
    "closed": ClosedError,
    "not_leader": NotLeaderError,
    "no_quorum": NoQuorumError,
    "shard_unavailable": ShardUnavailableError,
    "authentication": AuthenticationError,
    "cluster": ClusterError,
    "internal": SemcacheError,
}

Handler = Callable[[str, dict[str, Any], list[bytes]], tuple[dict[str, Any], list[bytes]]]


@dataclass(frozen=True, slots=True)
class PutItem:
    """One put as the client sends it: the value, and the float32 vector bytes or None (unsearchable)."""

    key: str
    value: bytes
    scope: str
    vector: bytes | None
    ttl_ms: int

    @property
    def size(self) -> int:
        """Bytes it adds to a request (and, roughly, to a Raft entry)."""
        return len(self.key) + len(self.value) + len(self.scope) + (len(self.vector) if self.vector else 0)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One search as the client sends it to a shard: float32 vector bytes and the search arguments."""

    vector: bytes
    scope: str
    top_k: int
    threshold: float | None


Hits = list[tuple[str, bytes, float]]  # (key, value, similarity), best first


def encode_put_items(items: Sequence[PutItem]) -> tuple[dict[str, Any], list[bytes]]:
    """The ``put_many`` request: one header entry per put, then each put's value and vector blobs in order."""
    blobs: list[bytes] = []
    entries = []
    for item in items:
        entries.append({"k": item.key, "s": item.scope, "t": item.ttl_ms, "v": item.vector is not None})
        blobs.append(item.value)
        if item.vector is not None:
            blobs.append(item.vector)
    return {"items": entries}, blobs


def decode_put_items(header: dict[str, Any], blobs: list[bytes]) -> list[tuple[dict[str, Any], bytes, bytes | None]]:
    """Split a ``put_many`` request into (item header, value, vector bytes or None), checking the framing.

    Raises:
        InvalidInputError: ``items`` is not a list of objects, or the blobs do not match it.
    """
    entries = header.get("items")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidInputError("put_many needs 'items', a list of objects")
    needed = sum(2 if e.get("v") else 1 for e in entries)
    if needed != len(blobs):
        raise InvalidInputError(f"put_many items need {needed} blobs, got {len(blobs)}")
    out, position = [], 0
    for entry in entries:
        value = blobs[position]
        vector = blobs[position + 1] if entry.get("v") else None
        position += 2 if entry.get("v") else 1
        out.append((entry, value, vector))
    return out


# ------------------------------------------------------------------ frames
def encode_frame(header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    """Pack a JSON header and binary blobs into one frame."""
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    parts = [_U32.pack(len(head)), head, _U32.pack(len(blobs))]
    for blob in blobs:
        parts += [_U32.pack(len(blob)), blob]
    return b"".join(parts)


def decode_frame(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Unpack a frame made by :func:`encode_frame`.

    Raises:
        InvalidInputError: a truncated or malformed frame.
    """
    view = memoryview(data)
    try:
        (size,) = _U32.unpack_from(view, 0)
        pos = 4 + size
        header = json.loads(bytes(view[4:pos]))
        (count,) = _U32.unpack_from(view, pos)
        pos += 4
        blobs = []
        for _ in range(count):
            (size,) = _U32.unpack_from(view, pos)
            pos += 4
            if pos + size > len(view):
                raise InvalidInputError("truncated frame")
            blobs.append(bytes(view[pos : pos + size]))
            pos += size
    except (struct.error, ValueError) as exc:
        raise InvalidInputError(f"malformed request frame: {exc}") from exc
    if not isinstance(header, dict) or pos != len(view):
        raise InvalidInputError("malformed request frame")
    return header, blobs


# ----------------------------------------------------------- error mapping
def error_to_header(exc: BaseException) -> dict[str, Any]:
    """The reply header that carries ``exc`` to the client."""
    code = "internal"
    for name, cls in ERROR_CODES.items():
        if isinstance(exc, cls):
            code = name
            break
    header: dict[str, Any] = {"error": code, "message": str(exc)}
    if isinstance(exc, ClusterError):
        header["shard"] = exc.shard_id
    if isinstance(exc, NotLeaderError):
        header["leader_hint"] = exc.leader_hint
    if isinstance(exc, LimitExceededError):
        header["limit"], header["actual"] = exc.limit, exc.actual
    return header


def error_from_reply(header: dict[str, Any]) -> SemcacheError:
    """Rebuild the exception a node reported (the inverse of :func:`error_to_header`)."""
    code, message = header.get("error"), str(header.get("message", ""))
    cls = ERROR_CODES.get(str(code), SemcacheError)
    if cls is LimitExceededError:
        exc: SemcacheError = LimitExceededError("value", int(header.get("actual", 0)), int(header.get("limit", 0)))
        exc.args = (message,)
        return exc
    if cls is NotLeaderError:
        return NotLeaderError(message, shard_id=header.get("shard"), leader_hint=header.get("leader_hint"))
    if issubclass(cls, ClusterError):
        return cls(message, shard_id=header.get("shard"))
    return cls(message)
