"""A node: one replica of one shard, serving clients over Arrow Flight.

``SemanticKVNode(config, replica_id)`` = a :class:`~semcache.cluster._raft.replica.ReplicatedShard`
(Raft, on the replica's ``raft`` address) + a Flight server (on its ``rpc``
address).  Run one from the command line::

    python -m semcache.cluster._node --config cluster.toml --replica shard-0-r0

Behaviour at the boundary:

* A write (put, delete, clear, membership) reaching a follower is refused
  with ``NotLeaderError`` whose ``leader_hint`` is the leader's RPC address;
  the client follows it.  A write is acknowledged only after it committed on a
  majority and was applied on this node.
* Reads with ``read_from="leader"`` (the default) are refused by followers the
  same way, so a client reading after its own acknowledged write sees it.
  ``read_from="any"`` answers from the local replica, which may lag the
  leader by about one heartbeat (0.1 s).  A replica that is catching up
  (installing a snapshot, or more than
  :data:`~semcache.cluster._raft.status.CATCH_UP_BOUND` entries behind the
  leader's commit index, or not yet in touch with a leader since it started)
  refuses them with ``ShardUnavailableError``, and the client asks another
  replica; its ``health`` says why (``catching_up``) and ``ready`` is false.
* The leader picks ``created_at_ms``/``expires_at_ms`` and puts them in the
  command; nodes never embed on the write path unless a request carries text
  and no vector (then the embedder named in the cluster file loads, once).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from semcache._engine.commands import Clear, Delete, Put
from semcache._engine.inputs import Limits, check_key, check_scan_args, check_scope, check_search_args, check_ttl_ms
from semcache._engine.state import ShardState
from semcache.cluster._config import ClusterConfig
from semcache.cluster._raft.replica import ReplicatedShard
from semcache.cluster._server import FlightNodeServer
from semcache.cluster._wire import (
    ACTIONS,
    COUNT,
    ERRORS,
    FOUND,
    KEYS,
    REMOVED,
    REPLICA_ID,
    SCOPE_PREFIX,
    Header,
    Hits,
    KeyRequest,
    PutItem,
    ScanRequest,
    SearchQuery,
    Topology,
    decode_put,
    decode_put_many,
    decode_search,
    decode_search_many,
    encode_hits,
    encode_search_results,
    error_to_header,
    read_from_of,
    replica_from_header,
)
from semcache.embeddings import BaseEmbedding, unit_vector
from semcache.errors import InvalidInputError, SemcacheError, ShardUnavailableError

logger = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.0005  # seconds; see run_node
DEFAULT_METRICS_HOST = "127.0.0.1"

Reply = tuple[Header, list[bytes]]
# A request item of a batch action, its checked form, and its result.
A = TypeVar("A")
C = TypeVar("C")
R = TypeVar("R")


@dataclass(frozen=True)
class SearchArgs:
    """One checked search request."""

    query: np.ndarray
    scope: str
    top_k: int
    threshold: float | None


class SemanticKVNode:
    """One replica of one shard plus its client RPC server.

    Args:
        config: the cluster file (:meth:`ClusterConfig.load`).
        replica_id: which replica of the file this process is.
        force_membership: take the shard's members from the cluster file, ignoring those the journal and
            snapshot recorded (recovering a shard that lost its quorum; docs/operations/nodes.md).

    The Raft endpoint and the Flight server start listening in the constructor;
    :meth:`serve` blocks until :meth:`stop`.
    """

    def __init__(self, config: ClusterConfig, replica_id: str, *, force_membership: bool = False) -> None:
        self.config = config
        self.replica_id = replica_id
        if force_membership:
            members = ", ".join(r.id for r in config.shard_of(replica_id).replicas)
            logger.warning("replica %s starts with a forced membership: %s (the cluster file's), whatever its "
                           "journal says", replica_id, members)
        self.shard = ReplicatedShard(config, replica_id, force_membership=force_membership)
        self._embedder: BaseEmbedding | None = None
        self._embedder_lock = threading.Lock()
        self._stopped = threading.Event()
        self._counters = dict.fromkeys(("puts", "gets", "get_hits", "deletes", "searches", "errors"), 0)
        replica = config.replica(replica_id)
        cert = Path(config.tls_cert).read_bytes() if config.tls_cert else None
        key = Path(config.tls_key).read_bytes() if config.tls_key else None
        # One handler per action of the wire format, named after it (_put for "put"...).
        self._handlers: dict[str, Callable[[Header, list[bytes]], Reply]] = {
            action: getattr(self, f"_{action}") for action in ACTIONS
        }
        warn_open_port(config, replica.rpc)
        try:
            self.server = FlightNodeServer(replica.rpc, self.handle, token=config.token,
                                           admin_token=config.admin_token, tls_cert=cert, tls_key=key)
        except Exception:
            self.shard.close()
            raise
        self.rpc_address = replica.rpc

    # ------------------------------------------------------------ lifecycle
    def serve(self) -> None:
        """Block until :meth:`stop` is called (from another thread or a signal handler)."""
        while not self._stopped.wait(0.2):
            pass

    def stop(self) -> None:
        """Stop serving: close the RPC server, then Raft (flushing the journal).  Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self.server.shutdown()
        finally:
            self.shard.close()

    def __enter__(self) -> SemanticKVNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- dispatch
    def handle(self, action: str, header: Header, blobs: list[bytes]) -> Reply:
        """Run one RPC action; exceptions become error replies in the transport."""
        if self._stopped.is_set():  # retryable for the client: another replica may answer
            raise ShardUnavailableError(f"node {self.replica_id} is stopping", shard_id=self.shard.shard_id)
        handler = self._handlers.get(action)
        if handler is None:
            raise InvalidInputError(f"unknown action {action!r}")
        try:
            return handler(header, blobs)
        except Exception:
            self._counters["errors"] += 1
            raise

    def _read_guard(self, read_from: str) -> None:
        """Refuse a bad ``read_from``; on a follower, refuse a read that must come from the leader, and on a
        replica that is catching up, any read (the client then asks another replica)."""
        if read_from not in ("leader", "any"):
            raise InvalidInputError(f"read_from must be 'leader' or 'any', got {read_from!r}")
        if read_from == "leader":
            self.shard.require_leader(for_read=True)
            return
        reason = self.shard.catching_up()
        if reason is not None:
            raise ShardUnavailableError(f"replica {self.replica_id} is catching up: {reason}",
                                        shard_id=self.shard.shard_id)

    # ---------------------------------------------------------------- writes
    def _put(self, header: Header, blobs: list[bytes]) -> Reply:
        item = decode_put(header, blobs)
        self.shard.require_leader()  # before embedding: a follower must not spend a model call
        self.shard.submit(self._put_command(item, self.shard.now_ms()))
        self._counters["puts"] += 1
        return {}, []

    def _put_many(self, header: Header, blobs: list[bytes]) -> Reply:
        """Several puts in one call (a client coalescing concurrent writers): one answer each, shared Raft entries."""
        items = decode_put_many(header, blobs)
        self.shard.require_leader()
        now = self.shard.now_ms()
        outcomes = each_checked(items, lambda item: self._put_command(PutItem.from_header(*item), now),
                                self.shard.submit_many)
        errors = [error_to_header(outcome) if isinstance(outcome, SemcacheError) else None for outcome in outcomes]
        self._counters["puts"] += errors.count(None)
        return {ERRORS: errors}, []

    def _put_command(self, item: PutItem, now: int) -> Put:
        """The Put a request asks for, checked; the leader's clock ``now`` stamps it."""
        key = check_key(item.key, Limits())
        scope = check_scope(item.scope)
        ttl_ms = check_ttl_ms(item.ttl_ms)
        return Put(key, item.value, scope, self._vector(item.vector, item.text), now, now + ttl_ms if ttl_ms else 0)

    def _vector(self, raw: bytes | None, text: str | None) -> bytes | None:
        dim = self.shard.dim
        if raw is not None:
            if len(raw) != dim * 4:
                raise InvalidInputError(f"vector has {len(raw)} bytes; this shard holds float32 vectors of dim {dim}")
            vector = np.frombuffer(raw, dtype=np.float32)
            checked = unit_vector(vector, dim, what="vector")
            return raw if checked is vector else checked.tobytes()
        if text is None:
            return None
        return self.embedder().embed_one(text).tobytes()

    def embedder(self) -> BaseEmbedding:
        """The cluster file's embedder, loaded on first use only."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = self.config.make_embedder()
            return self._embedder

    def _delete(self, header: Header, blobs: list[bytes]) -> Reply:
        key = check_key(KeyRequest.from_header(header).key, Limits())
        removed = self.shard.submit(Delete(key))
        self._counters["deletes"] += 1
        return {REMOVED: removed}, []

    def _clear(self, header: Header, blobs: list[bytes]) -> Reply:
        prefix = header.get(SCOPE_PREFIX, "")
        if not isinstance(prefix, str):
            raise InvalidInputError(f"{SCOPE_PREFIX} must be str")
        return {COUNT: self.shard.submit(Clear(prefix))}, []

    # ----------------------------------------------------------------- reads
    def _get(self, header: Header, blobs: list[bytes]) -> Reply:
        request = KeyRequest.from_header(header)
        key = check_key(request.key, Limits())
        self._read_guard(request.read_from or "leader")
        entry = self.shard.read(lambda state, now: state.get(key, now), touch=key)
        self._counters["gets"] += 1
        if entry is None:
            return {FOUND: False}, []
        self._counters["get_hits"] += 1
        return {FOUND: True}, [entry.value]

    def _exists(self, header: Header, blobs: list[bytes]) -> Reply:
        request = KeyRequest.from_header(header)
        key = check_key(request.key, Limits())
        self._read_guard(request.read_from or "leader")
        return {FOUND: self.shard.read(lambda state, now: state.get(key, now) is not None)}, []

    def _scan(self, header: Header, blobs: list[bytes]) -> Reply:
        request = ScanRequest.from_header(header)
        prefix, limit = check_scan_args(request.prefix, request.limit)
        self._read_guard(request.read_from)
        return {KEYS: self.shard.read(lambda state, now: state.scan(prefix, limit, now))}, []

    def _search(self, header: Header, blobs: list[bytes]) -> Reply:
        query = decode_search(header, blobs)
        self._read_guard(read_from_of(header))
        (hits,) = self._run_searches([self._search_args(query)])
        return encode_hits(hits)

    def _search_many(self, header: Header, blobs: list[bytes]) -> Reply:
        """Several searches in one call (a client coalescing concurrent searches): one answer each."""
        queries = decode_search_many(header, blobs)
        self._read_guard(read_from_of(header))
        outcomes = each_checked(queries, lambda query: self._search_args(SearchQuery.from_header(*query)),
                                self._run_searches)
        return encode_search_results(outcomes)

    def _search_args(self, query: SearchQuery) -> SearchArgs:
        """One search's arguments, checked (the query vector validated and normalised)."""
        check_search_args(query.top_k, query.threshold)
        scope = check_scope(query.scope)
        vector = np.frombuffer(self._vector(query.vector, None) or b"", dtype=np.float32)
        return SearchArgs(vector, scope, query.top_k, query.threshold)

    def _run_searches(self, searches: list[SearchArgs]) -> list[Hits]:
        """Run checked searches (the state lock held for one at a time, so writes wait for one search at most);
        count them and record the reads for eviction."""
        def run(search: SearchArgs) -> Callable[[ShardState, int], list[Any]]:
            return lambda state, now: state.search(search.query, search.scope, search.top_k, search.threshold, now)

        found = [self.shard.read(run(search)) for search in searches]
        self._counters["searches"] += len(searches)
        for matches in found:
            for match in matches:
                self.shard.touch(match.key)
        return [[(m.key, m.entry.value, m.similarity) for m in matches] for matches in found]

    # ----------------------------------------------------------------- admin
    def stats(self) -> dict[str, Any]:
        """This replica's store sizes, its request counters and its settings (the ``stats`` action's reply)."""
        stats = self.shard.read(lambda state, now: state.stats())
        return {
            "node": self.replica_id,
            "shard": self.shard.shard_id,
            "rpc": self.rpc_address,
            **stats,
            **self._counters,
            "capacity": self.config.capacity,
            "eviction": self.config.eviction,
            "embedder_loaded": self._embedder is not None,
        }

    def _stats(self, header: Header, blobs: list[bytes]) -> Reply:
        return self.stats(), []

    def _health(self, header: Header, blobs: list[bytes]) -> Reply:
        return self.shard.status(), []

    def _topology(self, header: Header, blobs: list[bytes]) -> Reply:
        """The handshake: every shard's replicas (this node's own shard: its live members), model and version."""
        members = tuple(self.shard.members.values())
        shards = tuple(replace(shard, replicas=members) if shard.id == self.shard.shard_id else shard
                       for shard in self.config.shards)
        model_id, dim = self.config.embedding_identity()
        topology = Topology(shards, model_id, dim, answered_for=self.shard.shard_id,
                            max_value_bytes=self.config.max_value_bytes)
        return topology.header(), []

    def _digest(self, header: Header, blobs: list[bytes]) -> Reply:
        applied, digest = self.shard.digest()
        return {"applied": applied, "digest": digest}, []

    def _compact(self, header: Header, blobs: list[bytes]) -> Reply:
        """Ask pysyncobj for a snapshot + log compaction at its next tick (operators, tests)."""
        self.shard.forceLogCompaction()
        return {}, []

    def _add_replica(self, header: Header, blobs: list[bytes]) -> Reply:
        replica = replica_from_header(header)
        self.shard.add_replica(replica.id, replica.raft, replica.rpc)
        return {}, []

    def _remove_replica(self, header: Header, blobs: list[bytes]) -> Reply:
        replica_id = header.get(REPLICA_ID)
        if not isinstance(replica_id, str):
            raise InvalidInputError(f"field {REPLICA_ID!r} must be str, got {type(replica_id).__name__}")
        self.shard.remove_replica(replica_id)
        return {}, []


def warn_open_port(config: ClusterConfig, rpc: str) -> None:
    """Log a WARNING when the cluster file leaves the RPC port open (no token), or admin actions on the data token."""
    if not config.token and not config.admin_token:
        logger.warning("the cluster file sets no token: anyone who can reach %s can read, write and administer "
                       "this shard (a dev setup; `semcache cluster up` generates tokens)", rpc)
    elif not config.token:
        logger.warning("the cluster file sets no data token: anyone who can reach %s can read and write", rpc)
    elif not config.admin_token:
        logger.warning("the cluster file sets no admin_token: the data token on %s also clears, compacts and "
                       "changes membership", rpc)


def each_checked(
    items: Sequence[A], check: Callable[[A], C], run: Callable[[list[C]], Sequence[R | SemcacheError]]
) -> list[R | SemcacheError]:
    """Each item's outcome in a batch request: items are checked one by one, the valid ones run together, and
    a bad item gets its own error in its place (it fails alone)."""
    checked: list[C | SemcacheError] = []
    for item in items:
        try:
            checked.append(check(item))
        except SemcacheError as exc:
            checked.append(exc)
    results = iter(run([c for c in checked if not isinstance(c, SemcacheError)]))
    return [c if isinstance(c, SemcacheError) else next(results) for c in checked]


def run_node(config_path: str | Path, replica_id: str, *, force_membership: bool = False,
             metrics_port: int | None = None, metrics_host: str = DEFAULT_METRICS_HOST) -> None:
    """Run one node until SIGTERM or SIGINT, then stop it cleanly (the ``semcache node`` command).

    Args:
        metrics_port: also serve the node's Prometheus metrics on this port (:mod:`semcache.cluster._metrics`).
        metrics_host: where to serve them; beyond loopback only if the cluster file sets ``allow_remote``.
    """
    config = ClusterConfig.load(config_path)
    # The applier and RPC threads run Python code between HNSW inserts; with the
    # default 5 ms switch interval the Raft tick thread (heartbeats,
    # acknowledgements) could wait up to 5 ms for the GIL.  This process is only a node.
    sys.setswitchinterval(SWITCH_INTERVAL)
    node = SemanticKVNode(config, replica_id, force_membership=force_membership)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    metrics = None
    try:
        if metrics_port is not None:
            from semcache.cluster._metrics import serve_node_metrics  # prometheus-client, only when asked for

            metrics = serve_node_metrics(node, metrics_port, metrics_host, allow_remote=config.allow_remote)
        logger.info("node %s serving %s (raft %s)", replica_id, node.rpc_address, config.replica(replica_id).raft)
        metrics_line = "" if metrics is None else f", metrics on {metrics.url}"
        print(f"semcache node {replica_id} serving {node.rpc_address}{metrics_line}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        if metrics is not None:
            metrics.close()
        node.stop()
