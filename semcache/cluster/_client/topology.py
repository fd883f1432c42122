"""What the client knows of the cluster's shape: each shard's replicas and leader, the model, the value limit.

The client asks any one node for the ``topology`` (the handshake), then asks
each shard's own replicas for its live members: a node knows other shards only
from its cluster file, but its own shard's members as Raft has them (after
``add-replica``/``remove-replica``).

>>> routes, model_id, dim = parse_topology({
...     "shards": [{"id": "shard-0", "replicas": [{"id": "r0", "rpc": "grpc://h:1"}, {"id": "r1", "rpc": "grpc://h:2"}]}],
...     "model_id": "hash:64:0", "dim": 64})
>>> routes[0].candidates(), model_id, dim
(['grpc://h:1', 'grpc://h:2'], 'hash:64:0', 64)
>>> routes[0].leader = "grpc://h:2"
>>> routes[0].candidates()
['grpc://h:2', 'grpc://h:1']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._config import ClusterConfig, Replica
from semcache.embeddings import BaseEmbedding, as_embedding
from semcache.errors import AuthenticationError, ClusterError, EmbeddingMismatchError, ShardUnavailableError


@dataclass
class ShardRoute:
    """What the client knows of one shard: its replicas and the leader it last saw."""

    id: str
    replicas: list[Replica]
    leader: str | None = None  # rpc address
    next_replica: int = field(default=0)  # where the rotation over the replicas starts next

    def candidates(self) -> list[str]:
        """Addresses to try for a leader's answer: the believed leader first, then the others in rotation."""
        rotated = self._rotated()
        if self.leader is None:
            return rotated
        return [self.leader] + [a for a in rotated if a != self.leader]

    def spread(self) -> list[str]:
        """Addresses to try for any replica's answer (follower reads), starting one further each time."""
        rotated = self._rotated()
        self.next_replica += 1
        return rotated

    def _rotated(self) -> list[str]:
        addresses = [r.rpc for r in self.replicas]
        start = self.next_replica % len(addresses) if addresses else 0
        return addresses[start:] + addresses[:start]


def parse_topology(topology: dict[str, Any]) -> tuple[list[ShardRoute], str, int]:
    """Shard routes, model id and dim from a node's ``topology()`` answer.

    Raises:
        ClusterError: the answer is malformed or names no shard.
    """
    try:
        routes = [
            ShardRoute(
                str(shard["id"]),
                [Replica(id=str(r["id"]), raft=str(r.get("raft", "")), rpc=str(r["rpc"])) for r in shard["replicas"]],
            )
            for shard in topology["shards"]
        ]
        model_id, dim = str(topology["model_id"]), int(topology["dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterError(f"malformed topology from the cluster: {exc!r}") from exc
    if not routes or any(not route.replicas for route in routes):
        raise ClusterError(f"the cluster topology names no shard or a shard without replicas: {topology!r}")
    return routes, model_id, dim


def embedding_for_cluster(embedding: Any, model_id: str, dim: int) -> BaseEmbedding:
    """The embedder to use against a cluster stamped ``model_id``/``dim``.

    ``None`` picks the cluster's own: a ``hash:DIM:SEED`` id gives that
    :class:`~semcache.embeddings.HashEmbedding`, anything else is loaded as a
    sentence-transformers model.

    Raises:
        EmbeddingMismatchError: ``embedding`` is another model or dimension.
    """
    chosen = as_embedding(model_id if embedding is None else embedding)
    if (chosen.model_id, chosen.dim) != (model_id, dim):
        raise EmbeddingMismatchError(
            f"the client embeds with {chosen.model_id} (dim {chosen.dim}) but the cluster "
            f"stores {model_id} (dim {dim})"
        )
    return chosen


def cluster_value_limit(topology: dict[str, Any]) -> int:
    """The largest value the cluster takes: from its topology, else the cluster-file default."""
    if "max_value_bytes" in topology:
        return int(topology["max_value_bytes"])
    return int(next(f.default for f in fields(ClusterConfig) if f.name == "max_value_bytes"))  # type: ignore[arg-type]


def first_topology(pool: ConnectionPool, seeds: Sequence[str]) -> dict[str, Any]:
    """The topology from the first of ``seeds`` that answers.

    Raises:
        AuthenticationError: a node refused the token (another seed would too).
        ShardUnavailableError: no seed answered.
    """
    failures: list[str] = []
    for address in seeds:
        try:
            return pool.get(address).topology()
        except AuthenticationError:
            raise
        except ClusterError as exc:
            failures.append(f"{address}: {exc}")
    raise ShardUnavailableError("no node answered the topology request: " + "; ".join(failures))


def refresh_members(pool: ConnectionPool, route: ShardRoute) -> None:
    """Ask the shard's own replicas for its live members; the cached leader is kept while still a member.

    Raises:
        ShardUnavailableError: no known replica of the shard answered.
    """
    topology = first_topology(pool, [r.rpc for r in route.replicas])
    fresh = {r.id: r for r in parse_topology(topology)[0]}.get(route.id)
    if fresh is not None:
        route.replicas = fresh.replicas
        if route.leader not in {r.rpc for r in fresh.replicas}:
            route.leader = None
