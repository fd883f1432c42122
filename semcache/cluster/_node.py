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
  leader by about one heartbeat (0.1 s), longer while a replica catches up.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from semcache._engine.commands import Clear, Delete, Put
from semcache._engine.inputs import Limits, check_key, check_scan_args, check_scope, check_search_args, check_ttl_ms
from semcache._engine.state import ShardState
from semcache.cluster._config import ClusterConfig
from semcache.cluster._flight import FlightNodeServer
from semcache.cluster._raft.replica import ReplicatedShard
from semcache.cluster._wire import decode_put_items, error_to_header
from semcache.embeddings import BaseEmbedding, unit_vector
from semcache.errors import InvalidInputError, SemcacheError, ShardUnavailableError

logger = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.0005  # seconds; see run_node

Reply = tuple[dict[str, Any], list[bytes]]
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

    The Raft endpoint and the Flight server start listening in the constructor;
    :meth:`serve` blocks until :meth:`stop`.
    """

    def __init__(self, config: ClusterConfig, replica_id: str) -> None:
        self.config = config
        self.replica_id = replica_id
        self.shard = ReplicatedShard(config, replica_id)
        self._embedder: BaseEmbedding | None = None
        self._embedder_lock = threading.Lock()
        self._stopped = threading.Event()
        self._counters = dict.fromkeys(("puts", "gets", "get_hits", "deletes", "searches", "errors"), 0)
        replica = config.replica(replica_id)
        cert = Path(config.tls_cert).read_bytes() if config.tls_cert else None
        key = Path(config.tls_key).read_bytes() if config.tls_key else None
        self._handlers = {
            "put": self._put,
            "put_many": self._put_many,
            "search_many": self._search_many,
            "get": self._get,
            "delete": self._delete,
            "exists": self._exists,
            "scan": self._scan,
            "search": self._search,
            "clear": self._clear,
            "stats": self._stats,
            "health": self._health,
            "topology": self._topology,
            "add_replica": self._add_replica,
            "remove_replica": self._remove_replica,
            "digest": self._digest,
            "compact": self._compact,
        }
        try:
            self.server = FlightNodeServer(replica.rpc, self.handle, token=config.token, tls_cert=cert, tls_key=key)
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
    def handle(self, action: str, header: dict[str, Any], blobs: list[bytes]) -> Reply:
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

    def _read_guard(self, header: dict[str, Any]) -> None:
        read_from = header.get("r", "leader")
        if read_from not in ("leader", "any"):
            raise InvalidInputError(f"read_from must be 'leader' or 'any', got {read_from!r}")
        if read_from == "leader":
            self.shard.require_leader(for_read=True)

    # ---------------------------------------------------------------- writes
    def _put(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        if len(blobs) != (2 if header.get("v") else 1):
            raise InvalidInputError("put needs a value blob, plus a vector blob when v is set")
        self.shard.require_leader()  # before embedding: a follower must not spend a model call
        command = self._put_command(header, blobs[0], blobs[1] if header.get("v") else None, self.shard.now_ms())
        self.shard.submit(command)
        self._counters["puts"] += 1
        return {}, []

    def _put_many(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        """Several puts in one call (a client coalescing concurrent writers): one answer each, shared Raft entries."""
        items = decode_put_items(header, blobs)
        self.shard.require_leader()
        now = self.shard.now_ms()
        outcomes = each_checked(items, lambda item: self._put_command(*item, now), self.shard.submit_many)
        errors = [error_to_header(outcome) if isinstance(outcome, SemcacheError) else None for outcome in outcomes]
        self._counters["puts"] += errors.count(None)
        return {"r": errors}, []

    def _put_command(self, header: dict[str, Any], value: bytes, vector: bytes | None, now: int) -> Put:
        """The Put a request asks for, checked; the leader's clock ``now`` stamps it."""
        key = _str(header, "k")
        scope = check_scope(header.get("s"))
        ttl_ms = check_ttl_ms(header.get("t", 0))
        return Put(key, value, scope, self._vector(vector, header.get("x")), now, now + ttl_ms if ttl_ms else 0)

    def _vector(self, raw: bytes | None, text: object) -> bytes | None:
        dim = self.shard.dim
        if raw is not None:
            if len(raw) != dim * 4:
                raise InvalidInputError(f"vector has {len(raw)} bytes; this shard holds float32 vectors of dim {dim}")
            vector = np.frombuffer(raw, dtype=np.float32)
            checked = unit_vector(vector, dim, what="vector")
            return raw if checked is vector else checked.tobytes()
        if text is None:
            return None
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be str, got {type(text).__name__}")
        return self.embedder().embed_one(text).tobytes()

    def embedder(self) -> BaseEmbedding:
        """The cluster file's embedder, loaded on first use only."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = self.config.make_embedder()
            return self._embedder

    def _delete(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        removed = self.shard.submit(Delete(_str(header, "k")))
        self._counters["deletes"] += 1
        return {"n": removed}, []

    def _clear(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        prefix = header.get("p", "")
        if not isinstance(prefix, str):
            raise InvalidInputError("scope_prefix must be str")
        return {"n": self.shard.submit(Clear(prefix))}, []

    # ----------------------------------------------------------------- reads
    def _get(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        key = _str(header, "k")
        self._read_guard(header)
        entry = self.shard.read(lambda state, now: state.get(key, now), touch=key)
        self._counters["gets"] += 1
        if entry is None:
            return {"f": False}, []
        self._counters["get_hits"] += 1
        return {"f": True}, [entry.value]

    def _exists(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        key = _str(header, "k")
        self._read_guard(header)
        return {"f": self.shard.read(lambda state, now: state.get(key, now) is not None)}, []

    def _scan(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        prefix, limit = header.get("p", ""), header.get("l", 100)
        prefix, limit = check_scan_args(prefix, limit)
        self._read_guard(header)
        return {"keys": self.shard.read(lambda state, now: state.scan(prefix, limit, now))}, []

    def _search(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        if len(blobs) != 1:
            raise InvalidInputError("search needs exactly one vector blob")
        self._read_guard(header)
        (matches,) = self._run_searches([self._search_args(header, blobs[0])])
        return _hits_reply(matches)

    def _search_many(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        """Several searches in one call (a client coalescing concurrent searches): one answer each."""
        queries = header.get("queries")
        if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
            raise InvalidInputError("search_many needs 'queries', a list of objects")
        if len(blobs) != len(queries):
            raise InvalidInputError(f"search_many has {len(queries)} queries but {len(blobs)} vector blobs")
        self._read_guard(header)
        outcomes = each_checked(list(zip(queries, blobs, strict=True)), lambda query: self._search_args(*query),
                                self._run_searches)
        results: list[dict[str, Any]] = []
        values: list[bytes] = []
        for outcome in outcomes:
            if isinstance(outcome, SemcacheError):
                results.append(error_to_header(outcome))
                continue
            hits, hit_values = _hits_reply(outcome)
            results.append(hits)
            values += hit_values
        return {"results": results}, values

    def _search_args(self, header: dict[str, Any], vector: bytes) -> SearchArgs:
        """One search's arguments, checked (the query vector validated and normalised)."""
        top_k, threshold = header.get("k", 5), header.get("th")
        check_search_args(top_k, threshold)
        scope = check_scope(header.get("s"))
        query = np.frombuffer(self._vector(vector, None) or b"", dtype=np.float32)
        return SearchArgs(query, scope, top_k, threshold)

    def _run_searches(self, searches: list[SearchArgs]) -> list[list[Any]]:
        """Run checked searches (the state lock held for one at a time, so writes wait for one search at most);
        count them and record the reads for eviction."""
        def run(search: SearchArgs) -> Callable[[ShardState, int], list[Any]]:
            return lambda state, now: state.search(search.query, search.scope, search.top_k, search.threshold, now)

        found = [self.shard.read(run(search)) for search in searches]
        self._counters["searches"] += len(searches)
        for matches in found:
            for match in matches:
                self.shard.touch(match.key)
        return found

    # ----------------------------------------------------------------- admin
    def _stats(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
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
        }, []

    def _health(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        return self.shard.status(), []

    def _topology(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        members = self.shard.members
        shards = []
        for shard in self.config.shards:
            if shard.id == self.shard.shard_id:
                replicas = [{"id": m.id, "rpc": m.rpc, "raft": m.raft} for m in members.values()]
            else:
                replicas = [{"id": r.id, "rpc": r.rpc, "raft": r.raft} for r in shard.replicas]
            shards.append({"id": shard.id, "replicas": replicas})
        model_id, dim = self.config.embedding_identity()
        # Only this node's own shard lists live members; the others come from the cluster file.
        return {"shards": shards, "model_id": model_id, "dim": dim, "answered_for": self.shard.shard_id}, []

    def _digest(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        applied, digest = self.shard.digest()
        return {"applied": applied, "digest": digest}, []

    def _compact(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        """Ask pysyncobj for a snapshot + log compaction at its next tick (operators, tests)."""
        self.shard.forceLogCompaction()
        return {}, []

    def _add_replica(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        self.shard.add_replica(_str(header, "id"), _str(header, "raft"), _str(header, "rpc"))
        return {}, []

    def _remove_replica(self, header: dict[str, Any], blobs: list[bytes]) -> Reply:
        self.shard.remove_replica(_str(header, "id"))
        return {}, []


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


def _hits_reply(matches: list[Any]) -> Reply:
    """A search's answer: keys and similarities in the header, the values as blobs, best first."""
    return {"keys": [m.key for m in matches], "sims": [m.similarity for m in matches]}, [m.entry.value for m in matches]


def _str(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str):
        raise InvalidInputError(f"field {name!r} must be str, got {type(value).__name__}")
    if name == "k":
        check_key(value, Limits())
    return value


def run_node(config_path: str | Path, replica_id: str) -> None:
    """Run one node until SIGTERM or SIGINT, then stop it cleanly (the ``semcache node`` command)."""
    config = ClusterConfig.load(config_path)
    # The applier and RPC threads run Python code between HNSW inserts; with the
    # default 5 ms switch interval the Raft tick thread (heartbeats,
    # acknowledgements) could wait up to 5 ms for the GIL.  This process is only a node.
    sys.setswitchinterval(SWITCH_INTERVAL)
    node = SemanticKVNode(config, replica_id)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    logger.info("node %s serving %s (raft %s)", replica_id, node.rpc_address, config.replica(replica_id).raft)
    print(f"semcache node {replica_id} serving {node.rpc_address}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        node.stop()
