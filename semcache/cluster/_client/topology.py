"""What the client knows of the cluster's shape: each shard's replicas and leader, the model, the value limit.

The client asks any one node for the ``topology`` (the handshake:
:class:`~semcache.cluster._wire.Topology`, which also refuses a node of another
wire version), then asks each shard's own replicas for its live members: a
node knows other shards only from its cluster file, but its own shard's
members as Raft has them (after ``add-replica``/``remove-replica``).

>>> from semcache.cluster._config import ShardConfig
>>> topology = Topology((ShardConfig("shard-0", (Replica("r0", "", "grpc://h:1"), Replica("r1", "", "grpc://h:2"))),),
...                     "hash:64:0", 64)
>>> (route,) = routes_of(topology)
>>> route.candidates()
['grpc://h:1', 'grpc://h:2']
>>> route.leader = "grpc://h:2"
>>> route.candidates()
['grpc://h:2', 'grpc://h:1']
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._config import Replica
from semcache.cluster._wire import Topology
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


def routes_of(topology: Topology) -> list[ShardRoute]:
    """A route per shard of ``topology``, no leader known yet."""
    return [ShardRoute(shard.id, list(shard.replicas)) for shard in topology.shards]


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


def first_topology(pool: ConnectionPool, seeds: Sequence[str]) -> Topology:
    """The topology from the first of ``seeds`` that answers.

    Raises:
        AuthenticationError: a node refused the token (another seed would too).
        ConfigurationError: the node speaks another wire version.
        ClusterError: its answer is malformed.
        ShardUnavailableError: no seed answered.
    """
    failures: list[str] = []
    for address in seeds:
        try:
            header = pool.get(address).topology()
        except AuthenticationError:
            raise
        except ClusterError as exc:
            failures.append(f"{address}: {exc}")
            continue
        return Topology.from_header(header, node=address)
    raise ShardUnavailableError("no node answered the topology request: " + "; ".join(failures))


def refresh_members(pool: ConnectionPool, route: ShardRoute) -> None:
    """Ask the shard's own replicas for its live members; the cached leader is kept while still a member.

    Raises:
        ShardUnavailableError: no known replica of the shard answered.
    """
    topology = first_topology(pool, [r.rpc for r in route.replicas])
    fresh = next((shard for shard in topology.shards if shard.id == route.id), None)
    if fresh is not None:
        route.replicas = list(fresh.replicas)
        if route.leader not in {r.rpc for r in fresh.replicas}:
            route.leader = None


def join_routes(pool: ConnectionPool, seeds: Sequence[str]) -> tuple[Topology, dict[str, ShardRoute]]:
    """The topology from the first seed that answers, and a route per shard with its live members.

    The seed knows its own shard's live members, the others only from its cluster
    file: each other shard's members are asked of its replicas (kept as the file
    has them when none answers).

    Raises:
        as :func:`first_topology`.
    """
    topology = first_topology(pool, seeds)
    routes = {route.id: route for route in routes_of(topology)}
    for route in routes.values():
        if route.id != topology.answered_for:
            with contextlib.suppress(ShardUnavailableError):
                refresh_members(pool, route)
    return topology, routes
