"""An in-process fake cluster behind the client's ``connect=`` seam.

Each fake shard keeps its data in a real embedded :class:`SemanticKV` (so
search is the real engine) and decides, like a Raft group would, who may answer:
a replica that is down raises ``ShardUnavailableError``, a follower asked for a
write raises ``NotLeaderError`` with a hint, a shard without a majority raises
``NoQuorumError``.  A fake clock, advanced by the client's injected sleep,
drives elections, so retry tests take no wall-clock time.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semcache._engine.kv import SemanticKV
from semcache.cluster._config import Replica, ShardConfig
from semcache.cluster._wire import WIRE_VERSION, WIRE_VERSION_FIELD, Topology
from semcache.embeddings import HashEmbedding
from semcache.errors import AuthenticationError, NoQuorumError, NotLeaderError, ShardUnavailableError


class FakeClock:
    """Monotonic seconds that only move when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class FakeShard:
    id: str
    replicas: list[str]  # rpc addresses
    kv: SemanticKV
    leader: str | None
    down: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)  # take the call, then time out
    elect_at: float | None = None  # fake time at which ``next_leader`` takes over
    next_leader: str | None = None

    def has_quorum(self) -> bool:
        return sum(r not in self.down for r in self.replicas) > len(self.replicas) // 2


class FakeCluster:
    """Shards of fake replicas at addresses ``fake://<shard>/<i>``."""

    def __init__(self, shards: int = 2, replicas: int = 3, *, dim: int = 32, token: str | None = None,
                 wire_version: int | None = WIRE_VERSION) -> None:
        self.embedding = HashEmbedding(dim)
        self.clock = FakeClock()
        self.token = token
        self.wire_version = wire_version  # what the topology says the nodes speak (None: no version field)
        self.calls: Counter[tuple[str, str]] = Counter()  # (address, method) -> count
        self.shards: dict[str, FakeShard] = {}
        for s in range(shards):
            shard_id = f"shard-{s}"
            addresses = [f"fake://{shard_id}/{r}" for r in range(replicas)]
            kv = SemanticKV(embedding=self.embedding, node_id=shard_id)
            self.shards[shard_id] = FakeShard(shard_id, addresses, kv, leader=addresses[0])
        self.file_replicas = {shard_id: list(shard.replicas) for shard_id, shard in self.shards.items()}

    def shard_of(self, address: str) -> FakeShard:
        return self.shards[address.split("/")[2]]

    def kill(self, address: str, *, elect: str | None = None, after: float = 0.0) -> None:
        """Take a replica down; if it led, ``elect`` takes over ``after`` fake seconds later."""
        shard = self.shard_of(address)
        shard.down.add(address)
        if shard.leader == address:
            shard.leader = None
            if elect is not None:
                shard.elect_at, shard.next_leader = self.clock() + after, elect

    def tick(self, shard: FakeShard) -> None:
        if shard.elect_at is not None and self.clock() >= shard.elect_at:
            shard.leader, shard.elect_at = shard.next_leader, None

    def connect(self, address: str, token: str | None = None) -> FakeNode:
        return FakeNode(self, address, token)

    def topology(self, answered_for: str | None = None) -> dict[str, Any]:
        """As a node of ``answered_for`` answers: its own shard's live members, the others' from the file."""
        def replicas(shard: FakeShard) -> tuple[Replica, ...]:
            addresses = shard.replicas if answered_for in (None, shard.id) else self.file_replicas[shard.id]
            return tuple(Replica(a.replace("fake://", "").replace("/", "-r"), "", a) for a in addresses)

        shards = tuple(ShardConfig(s.id, replicas(s)) for s in self.shards.values())
        header = Topology(shards, self.embedding.model_id, self.embedding.dim, answered_for=answered_for).header()
        if self.wire_version is None:
            del header[WIRE_VERSION_FIELD]
        else:
            header[WIRE_VERSION_FIELD] = self.wire_version
        return header

    def close(self) -> None:
        for shard in self.shards.values():
            shard.kv.close()


class FakeNode:
    """What ``NodeClient`` would be, answering from a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster, address: str, token: str | None) -> None:
        self.cluster, self.address, self.token = cluster, address, token
        self.shard = cluster.shard_of(address) if address.startswith("fake://shard") else None

    def _enter(self, method: str, *, write: bool = False, leader_only: bool = False) -> SemanticKV:
        self.cluster.calls[(self.address, method)] += 1
        if self.cluster.token is not None and self.token != self.cluster.token:
            raise AuthenticationError("token refused")
        shard = self.shard
        if shard is None or self.address in shard.down:
            raise ShardUnavailableError(f"{self.address} is down")
        if self.address in shard.slow:
            error = ShardUnavailableError(f"{self.address} did not answer in time")
            error.timed_out = True  # type: ignore[attr-defined]
            raise error
        self.cluster.tick(shard)
        if (write or leader_only) and shard.leader != self.address:
            raise NotLeaderError("not the leader", shard_id=shard.id, leader_hint=shard.leader)
        if write and not shard.has_quorum():
            raise NoQuorumError("no quorum", shard_id=shard.id)
        return shard.kv

    def put(self, key: str, value: bytes, *, scope: str, vector: bytes | None, ttl_ms: int) -> None:
        kv = self._enter("put", write=True)
        array = None if vector is None else np.frombuffer(vector, dtype=np.float32)
        # The client sends no vector only for binary values, which the embedded store keeps unsearchable too.
        kv.put(key, value, ttl_ms, scope=scope, vector=array)

    def put_many(self, items: list[Any]) -> list[Any]:
        kv = self._enter("put_many", write=True)
        for item in items:
            array = None if item.vector is None else np.frombuffer(item.vector, dtype=np.float32)
            kv.put(item.key, item.value, item.ttl_ms, scope=item.scope, vector=array)
        return [None] * len(items)

    def get(self, key: str, *, read_from: str = "leader") -> bytes | None:
        return self._enter("get", leader_only=read_from == "leader").get(key)

    def delete(self, key: str) -> bool:
        return self._enter("delete", write=True).delete(key)

    def exists(self, key: str, *, read_from: str = "leader") -> bool:
        return self._enter("exists", leader_only=read_from == "leader").exists(key)

    def scan(self, prefix: str, limit: int, *, read_from: str = "leader") -> list[str]:
        return self._enter("scan", leader_only=read_from == "leader").scan(prefix, limit)

    def search(
        self, vector: bytes, *, scope: str, top_k: int, threshold: float | None, read_from: str = "leader"
    ) -> list[tuple[str, bytes, float]]:
        return _hits(self._enter("search", leader_only=read_from == "leader"), vector, scope, top_k, threshold)

    def search_many(self, queries: list[Any], *, read_from: str = "leader") -> list[Any]:
        kv = self._enter("search_many", leader_only=read_from == "leader")
        return [_hits(kv, q.vector, q.scope, q.top_k, q.threshold) for q in queries]

    def clear(self, scope_prefix: str) -> int:
        kv = self._enter("clear", write=True)
        return kv.clear_scope(scope_prefix) if scope_prefix else kv.clear_all()

    def stats(self) -> dict[str, Any]:
        return self._enter("stats", leader_only=True).stats()

    def health(self) -> dict[str, Any]:
        kv = self._enter("health")
        assert self.shard is not None
        role = "leader" if self.shard.leader == self.address else "follower"
        return {"node": self.address, "shard": self.shard.id, "role": role, "leader": self.shard.leader,
                "term": 1, "commit_index": 0, "entries": len(kv), "healthy": True}

    def topology(self) -> dict[str, Any]:
        self.cluster.calls[(self.address, "topology")] += 1
        if self.cluster.token is not None and self.token != self.cluster.token:
            raise AuthenticationError("token refused")
        if self.shard is not None and self.address in self.shard.down:
            raise ShardUnavailableError(f"{self.address} is down")
        if self.address.startswith("fake://nowhere"):
            raise ShardUnavailableError(f"{self.address} does not answer")
        return self.cluster.topology(None if self.shard is None else self.shard.id)

    def close(self) -> None:
        self.cluster.calls[(self.address, "close")] += 1


def _hits(kv: SemanticKV, vector: bytes, scope: str, top_k: int, threshold: float | None) -> list[Any]:
    found = kv.search(None, top_k, threshold, scope=scope, vector=np.frombuffer(vector, dtype=np.float32))
    return [(h.key, h.value, h.similarity) for h in found]
