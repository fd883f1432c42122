"""The client-node wire format: frames, named fields, request and reply records, error codes, the version.

Every call is one Flight ``do_action``.  The action type names the operation
(``put``, ``get``, ``search``...; :data:`ACTIONS`) and the body is a frame: a
small JSON header followed by raw binary blobs (values and float32 vectors
travel as bytes, never as JSON).  The reply is one Flight result holding a
frame in the same format.  docs/internals/wire-format.md describes every
action's fields; this module is where they are defined, and both sides (the
node's handlers, :class:`~semcache.cluster._flight.NodeClient`) build and read
headers only through it.

Frame layout (little-endian)::

    u32 header length | header (UTF-8 JSON object) | u32 blob count | (u32 length | blob)*

>>> frame = encode_frame({KEY: "doc:1"}, [b"value"])
>>> decode_frame(frame)
({'key': 'doc:1'}, [b'value'])

Versions: every request header carries ``wire_version`` (:func:`encode_request`);
a node refuses a request of another version (:func:`decode_request`), and the
``topology`` reply (the handshake) tells the client the node's version
(:meth:`Topology.from_header` refuses a mismatch).  Either way the
:class:`~semcache.errors.ConfigurationError` names both versions.

>>> decode_request(encode_request({KEY: "doc:1"}))
({'key': 'doc:1'}, [])
>>> decode_request(encode_frame({KEY: "doc:1"}))
Traceback (most recent call last):
...
semcache.errors.ConfigurationError: the client speaks wire version 1, this node speaks 2: upgrade the client ...

Application errors travel *inside* the reply frame as an error code
(:data:`ERROR_CODES`), which :func:`error_from_reply` turns back into the
matching :mod:`semcache.errors` class, so the client sees ``NotLeaderError``
with its ``leader_hint``, ``LimitExceededError`` with its limit, and so on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semcache.cluster._config import Replica, ShardConfig
from semcache.cluster._sizes import DEFAULT_MAX_VALUE_BYTES, MAX_HEADER_BYTES
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    CorruptDataError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    MissingDependencyError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
    UnknownScopeError,
)

WIRE_VERSION = 2  # 1: the unversioned format with one-letter fields (requests carried no version)
UNVERSIONED = 1  # what a request or topology without a version field speaks

_U32 = struct.Struct("<I")

# ------------------------------------------------------------------ fields
# Every header field has one name and one meaning, here.  Requests:
WIRE_VERSION_FIELD = "wire_version"  # every request; the topology reply
KEY = "key"
SCOPE = "scope"
TTL_MS = "ttl_ms"
HAS_VECTOR = "has_vector"  # a put's second blob is its float32 vector
TEXT = "text"  # a put without a vector: the node embeds this
ITEMS = "items"  # put_many: one put header each
READ_FROM = "read_from"  # "leader" or "any"
PREFIX = "prefix"  # scan: the key prefix
LIMIT = "limit"  # scan: at most this many keys
TOP_K = "top_k"
THRESHOLD = "threshold"
QUERIES = "queries"  # search_many: one search header each
SCOPE_PREFIX = "scope_prefix"  # clear: "" clears everything
REPLICA_ID = "replica_id"
RAFT = "raft"
RPC = "rpc"
# Replies:
FOUND = "found"  # get, exists: the key is there (get: its value is the blob)
REMOVED = "removed"  # delete: the key was there
COUNT = "count"  # clear: entries removed
KEYS = "keys"  # scan, search: keys (search: the values are the blobs, in order)
SIMILARITIES = "similarities"  # search: one per key
ERRORS = "errors"  # put_many: one error header or null per put
RESULTS = "results"  # search_many: one search reply or error header per query
SHARDS = "shards"  # topology
SHARD_ID = "shard_id"  # topology shards; error replies
REPLICAS = "replicas"  # topology shards
MODEL_ID = "model_id"
DIM = "dim"
ANSWERED_FOR = "answered_for"  # topology: the shard whose members are live (the node's own)
MAX_VALUE_BYTES = "max_value_bytes"
# Error replies:
ERROR = "error"  # the code, a key of ERROR_CODES
MESSAGE = "message"
LEADER_HINT = "leader_hint"
LIMIT_BYTES = "limit_bytes"
ACTUAL_BYTES = "actual_bytes"

ACTIONS: dict[str, str] = {
    "put": "store one value (and its vector) on the shard's leader",
    "put_many": "store several values in one call (shared Raft entries), one error or null each",
    "get": "a key's value",
    "exists": "whether a key is there",
    "delete": "remove a key",
    "scan": "keys with a prefix, sorted",
    "search": "the entries nearest to a vector",
    "search_many": "several searches in one call, one answer or error each",
    "clear": "remove the entries of scopes with a prefix (all with '')",
    "stats": "the node's store and request counters",
    "health": "the replica's Raft state",
    "topology": "the cluster's shards and replicas, model and version (the handshake)",
    "digest": "the replica's applied index and state digest",
    "compact": "snapshot and compact the Raft log at the next tick",
    "add_replica": "add a replica to the shard (leader only)",
    "remove_replica": "remove a replica from the shard (leader only)",
}
# Actions that change what the cluster is rather than what it holds, or remove data wholesale: a node runs them
# only for a caller holding the admin token (docs/operations/security.md).
ADMIN_ACTIONS = frozenset({"clear", "compact", "add_replica", "remove_replica"})

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
    "missing_dependency": MissingDependencyError,
    "not_leader": NotLeaderError,
    "no_quorum": NoQuorumError,
    "shard_unavailable": ShardUnavailableError,
    "authentication": AuthenticationError,
    "cluster": ClusterError,
    "internal": SemcacheError,
}

Header = dict[str, Any]
Hits = list[tuple[str, bytes, float]]  # (key, value, similarity), best first
Handler = Callable[[str, Header, list[bytes]], tuple[Header, list[bytes]]]  # the node: (action, header, blobs)


# ------------------------------------------------------------------ frames
def encode_frame(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """Pack a JSON header and binary blobs into one frame."""
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    parts = [_U32.pack(len(head)), head, _U32.pack(len(blobs))]
    for blob in blobs:
        parts += [_U32.pack(len(blob)), blob]
    return b"".join(parts)


def decode_frame(data: bytes, *, max_header_bytes: int | None = None) -> tuple[Header, list[bytes]]:
    """Unpack a frame made by :func:`encode_frame`.

    Args:
        max_header_bytes: refuse a larger JSON header (requests; replies are not bounded).

    Raises:
        LimitExceededError: the header is over ``max_header_bytes``.
        InvalidInputError: a truncated or malformed frame, or a header nested too deep for the JSON parser.
    """
    view = memoryview(data)
    try:
        (size,) = _U32.unpack_from(view, 0)
        if max_header_bytes is not None and size > max_header_bytes:
            raise LimitExceededError("request header", size, max_header_bytes)
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
    except LimitExceededError:
        raise
    except RecursionError as exc:  # json's parser recurses once per nesting level
        raise InvalidInputError("malformed request frame: the header is nested too deep") from exc
    except (struct.error, ValueError) as exc:
        raise InvalidInputError(f"malformed request frame: {exc}") from exc
    if not isinstance(header, dict) or pos != len(view):
        raise InvalidInputError("malformed request frame")
    return header, blobs


def encode_request(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """A request frame: ``header`` with this side's ``wire_version``."""
    return encode_frame({WIRE_VERSION_FIELD: WIRE_VERSION, **header}, blobs)


def decode_request(data: bytes) -> tuple[Header, list[bytes]]:
    """A request frame's header (without its version) and blobs.

    Raises:
        InvalidInputError: a malformed frame, or a header over :data:`~semcache.cluster._sizes.MAX_HEADER_BYTES`
            (LimitExceededError) or nested too deep.
        ConfigurationError: the request is of another wire version.
    """
    header, blobs = decode_frame(data, max_header_bytes=MAX_HEADER_BYTES)
    client_version = header.pop(WIRE_VERSION_FIELD, UNVERSIONED)
    if client_version != WIRE_VERSION:
        raise version_mismatch(client=client_version, node=WIRE_VERSION, node_name="this node")
    return header, blobs


def version_mismatch(*, client: object, node: object, node_name: str) -> ConfigurationError:
    """The error for a client and a node of different wire versions, saying which side to upgrade."""
    if isinstance(client, int) and isinstance(node, int) and client < node:
        advice = f"upgrade the client (pip install -U semcache-llm) to the nodes' version (wire version {node})"
    else:
        advice = f"upgrade the cluster's nodes, or use a client that speaks wire version {node}"
    return ConfigurationError(f"the client speaks wire version {client}, {node_name} speaks {node}: {advice}")


# ------------------------------------------------------------ field reads
def _str(header: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = header.get(name, default)
    if not isinstance(value, str):
        raise InvalidInputError(f"field {name!r} must be str, got {type(value).__name__}")
    return value


def _int(header: Mapping[str, Any], name: str, default: int) -> int:
    value = header.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"field {name!r} must be int, got {value!r}")
    return value


def _objects(header: Mapping[str, Any], name: str, action: str) -> list[Header]:
    value = header.get(name)
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise InvalidInputError(f"{action} needs {name!r}, a list of objects")
    return value


# --------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class PutItem:
    """One put (a ``put`` request, or one of a ``put_many``'s): the value, and the float32 vector bytes or
    None (then ``text``, if set, is embedded by the node; else the entry is unsearchable)."""

    key: str
    value: bytes
    scope: str
    vector: bytes | None
    ttl_ms: int
    text: str | None = None

    @property
    def size(self) -> int:
        """Bytes it adds to a request (and, roughly, to a Raft entry)."""
        return len(self.key) + len(self.value) + len(self.scope) + (len(self.vector) if self.vector else 0)

    def header(self) -> Header:
        header: Header = {KEY: self.key, SCOPE: self.scope, TTL_MS: self.ttl_ms, HAS_VECTOR: self.vector is not None}
        if self.text is not None:
            header[TEXT] = self.text
        return header

    def blobs(self) -> list[bytes]:
        return [self.value] if self.vector is None else [self.value, self.vector]

    @classmethod
    def from_header(cls, header: Mapping[str, Any], value: bytes, vector: bytes | None) -> PutItem:
        """The put a header describes (field types checked; the node checks the values).

        Raises:
            InvalidInputError: a field of the wrong type.
        """
        text = header.get(TEXT)
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"field {TEXT!r} must be str, got {type(text).__name__}")
        return cls(_str(header, KEY), value, _str(header, SCOPE, ""), vector, _int(header, TTL_MS, 0), text)


def decode_put(header: Mapping[str, Any], blobs: list[bytes]) -> PutItem:
    """A ``put`` request: its header and the value blob, plus the vector blob when ``has_vector``.

    Raises:
        InvalidInputError: the blobs do not match the header, or a field of the wrong type.
    """
    if len(blobs) != (2 if header.get(HAS_VECTOR) else 1):
        raise InvalidInputError(f"put needs a value blob, plus a vector blob when {HAS_VECTOR} is set")
    return PutItem.from_header(header, blobs[0], blobs[1] if header.get(HAS_VECTOR) else None)


def encode_put_many(items: Sequence[PutItem]) -> tuple[Header, list[bytes]]:
    """The ``put_many`` request: one header entry per put, then each put's value and vector blobs in order."""
    blobs: list[bytes] = []
    for item in items:
        blobs += item.blobs()
    return {ITEMS: [item.header() for item in items]}, blobs


def decode_put_many(header: Mapping[str, Any], blobs: list[bytes]) -> list[tuple[Header, bytes, bytes | None]]:
    """Split a ``put_many`` request into (item header, value, vector bytes or None), checking the framing only
    (each item is checked alone by :meth:`PutItem.from_header`, so a bad one fails alone).

    Raises:
        InvalidInputError: ``items`` is not a list of objects, or the blobs do not match it.
    """
    entries = _objects(header, ITEMS, "put_many")
    needed = sum(2 if e.get(HAS_VECTOR) else 1 for e in entries)
    if needed != len(blobs):
        raise InvalidInputError(f"put_many items need {needed} blobs, got {len(blobs)}")
    out, position = [], 0
    for entry in entries:
        value = blobs[position]
        vector = blobs[position + 1] if entry.get(HAS_VECTOR) else None
        position += 2 if entry.get(HAS_VECTOR) else 1
        out.append((entry, value, vector))
    return out


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A ``get``, ``exists`` or ``delete``: the key, and where reads may be served (None for a delete)."""

    key: str
    read_from: str | None = None

    def header(self) -> Header:
        return {KEY: self.key} if self.read_from is None else {KEY: self.key, READ_FROM: self.read_from}

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> KeyRequest:
        return cls(_str(header, KEY), read_from_of(header))


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """A ``scan``: keys starting with ``prefix``, at most ``limit``."""

    prefix: str
    limit: int
    read_from: str = "leader"

    def header(self) -> Header:
        return {PREFIX: self.prefix, LIMIT: self.limit, READ_FROM: self.read_from}

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> ScanRequest:
        return cls(_str(header, PREFIX, ""), _int(header, LIMIT, 100), read_from_of(header))


def read_from_of(header: Mapping[str, Any]) -> str:
    """A read's ``read_from`` (default ``"leader"``; the node checks the value)."""
    return _str(header, READ_FROM, "leader")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One search (a ``search`` request, or one of a ``search_many``'s): float32 vector bytes and the search
    arguments."""

    vector: bytes
    scope: str
    top_k: int
    threshold: float | None

    def header(self) -> Header:
        return {SCOPE: self.scope, TOP_K: self.top_k, THRESHOLD: self.threshold}

    @classmethod
    def from_header(cls, header: Mapping[str, Any], vector: bytes) -> SearchQuery:
        """The search a header describes (field types checked; the node checks the values).

        Raises:
            InvalidInputError: a field of the wrong type.
        """
        threshold = header.get(THRESHOLD)
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise InvalidInputError(f"field {THRESHOLD!r} must be a number or null, got {threshold!r}")
        return cls(vector, _str(header, SCOPE, ""), _int(header, TOP_K, 5), threshold)


def decode_search(header: Mapping[str, Any], blobs: list[bytes]) -> SearchQuery:
    """A ``search`` request: its header and the one vector blob.

    Raises:
        InvalidInputError: not exactly one blob, or a field of the wrong type.
    """
    if len(blobs) != 1:
        raise InvalidInputError("search needs exactly one vector blob")
    return SearchQuery.from_header(header, blobs[0])


def encode_search_many(queries: Sequence[SearchQuery], read_from: str) -> tuple[Header, list[bytes]]:
    """The ``search_many`` request: one header entry per search, their vectors as the blobs in order."""
    return {READ_FROM: read_from, QUERIES: [q.header() for q in queries]}, [q.vector for q in queries]


def decode_search_many(header: Mapping[str, Any], blobs: list[bytes]) -> list[tuple[Header, bytes]]:
    """Split a ``search_many`` request into (query header, vector), checking the framing only.

    Raises:
        InvalidInputError: ``queries`` is not a list of objects, or there is not one blob per query.
    """
    queries = _objects(header, QUERIES, "search_many")
    if len(blobs) != len(queries):
        raise InvalidInputError(f"search_many has {len(queries)} queries but {len(blobs)} vector blobs")
    return list(zip(queries, blobs, strict=True))


def replica_header(replica: Replica) -> Header:
    """An ``add_replica`` request, and a replica in the ``topology`` reply."""
    return {REPLICA_ID: replica.id, RAFT: replica.raft, RPC: replica.rpc}


def replica_from_header(header: Mapping[str, Any]) -> Replica:
    """Raises:
    InvalidInputError: a field is not a str.
    """
    return Replica(_str(header, REPLICA_ID), _str(header, RAFT, ""), _str(header, RPC))


# ---------------------------------------------------------------- replies
def encode_hits(hits: Sequence[tuple[str, bytes, float]]) -> tuple[Header, list[bytes]]:
    """A search's answer: keys and similarities in the header, the values as blobs, best first."""
    return {KEYS: [key for key, _, _ in hits], SIMILARITIES: [sim for _, _, sim in hits]}, [v for _, v, _ in hits]


def decode_hits(header: Mapping[str, Any], values: Iterator[bytes]) -> Hits:
    """The hits of :func:`encode_hits`, taking their values from ``values`` in order."""
    return [(key, next(values), float(sim)) for key, sim in zip(header[KEYS], header[SIMILARITIES], strict=True)]


def encode_search_results(outcomes: Sequence[Hits | SemcacheError]) -> tuple[Header, list[bytes]]:
    """The ``search_many`` reply: each search's hits, or its own error, in order."""
    results: list[Header] = []
    values: list[bytes] = []
    for outcome in outcomes:
        if isinstance(outcome, SemcacheError):
            results.append(error_to_header(outcome))
            continue
        hits, hit_values = encode_hits(outcome)
        results.append(hits)
        values += hit_values
    return {RESULTS: results}, values


def decode_search_results(header: Mapping[str, Any], blobs: list[bytes]) -> list[Hits | SemcacheError] | None:
    """The answers of :func:`encode_search_results`; None if the reply has no list of results."""
    answers = header.get(RESULTS)
    if not isinstance(answers, list):
        return None
    values = iter(blobs)
    return [error_from_reply(answer) if ERROR in answer else decode_hits(answer, values) for answer in answers]


@dataclass(frozen=True)
class Topology:
    """The ``topology`` reply (the handshake): the cluster's shards, model and limits, and the node's version.

    ``shards`` lists every shard's replicas; only the shard ``answered_for``
    (the answering node's own) has its live Raft members, the others come from
    the node's cluster file.
    """

    shards: tuple[ShardConfig, ...]
    model_id: str
    dim: int
    answered_for: str | None = None
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    wire_version: int = WIRE_VERSION

    def header(self) -> Header:
        header: Header = {
            WIRE_VERSION_FIELD: self.wire_version,
            SHARDS: [{SHARD_ID: s.id, REPLICAS: [replica_header(r) for r in s.replicas]} for s in self.shards],
            MODEL_ID: self.model_id,
            DIM: self.dim,
            MAX_VALUE_BYTES: self.max_value_bytes,
        }
        if self.answered_for is not None:
            header[ANSWERED_FOR] = self.answered_for
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, node: str = "the node") -> Topology:
        """Read a node's ``topology`` reply.

        Raises:
            ConfigurationError: the node speaks another wire version.
            ClusterError: the reply is malformed or names no shard, or a shard without replicas.
        """
        node_version = header.get(WIRE_VERSION_FIELD, UNVERSIONED)
        if node_version != WIRE_VERSION:
            raise version_mismatch(client=WIRE_VERSION, node=node_version, node_name=f"the node at {node}")
        try:
            shards = tuple(
                ShardConfig(_str(shard, SHARD_ID), tuple(replica_from_header(r) for r in shard[REPLICAS]))
                for shard in header[SHARDS]
            )
            answered_for = header.get(ANSWERED_FOR)
            topology = cls(shards, str(header[MODEL_ID]), int(header[DIM]),
                           None if answered_for is None else str(answered_for),
                           _int(header, MAX_VALUE_BYTES, DEFAULT_MAX_VALUE_BYTES), node_version)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # InvalidInputError is a ValueError
            raise ClusterError(f"malformed topology from {node}: {exc!r}") from exc
        if not shards or any(not shard.replicas for shard in shards):
            raise ClusterError(f"the topology from {node} names no shard or a shard without replicas: {header!r}")
        return topology


# ----------------------------------------------------------- error mapping
def error_to_header(exc: BaseException) -> Header:
    """The reply header that carries ``exc`` to the client."""
    code = "internal"
    for name, cls in ERROR_CODES.items():
        if isinstance(exc, cls):
            code = name
            break
    header: Header = {ERROR: code, MESSAGE: str(exc)}
    if isinstance(exc, ClusterError):
        header[SHARD_ID] = exc.shard_id
    if isinstance(exc, NotLeaderError):
        header[LEADER_HINT] = exc.leader_hint
    if isinstance(exc, LimitExceededError):
        header[LIMIT_BYTES], header[ACTUAL_BYTES] = exc.limit, exc.actual
    return header


def error_from_reply(header: Mapping[str, Any]) -> SemcacheError:
    """Rebuild the exception a node reported (the inverse of :func:`error_to_header`)."""
    code, message = header.get(ERROR), str(header.get(MESSAGE, ""))
    cls = ERROR_CODES.get(str(code), SemcacheError)
    if cls is LimitExceededError:
        exc: SemcacheError = LimitExceededError(
            "value", int(header.get(ACTUAL_BYTES, 0)), int(header.get(LIMIT_BYTES, 0))
        )
        exc.args = (message,)
        return exc
    if cls is NotLeaderError:
        return NotLeaderError(message, shard_id=header.get(SHARD_ID), leader_hint=header.get(LEADER_HINT))
    if issubclass(cls, ClusterError):
        return cls(message, shard_id=header.get(SHARD_ID))
    return cls(message)
