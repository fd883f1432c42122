"""The client's admin calls: membership, a clear on every shard, every replica's Raft state, the cluster-wide stats.

>>> leader_report({"shard-0": {"r0": {"rpc": "grpc://h:1", "role": "leader"},
...                            "r1": {"rpc": "grpc://h:2", "healthy": False, "error": "down"}}})
{'healthy': True, 'shards': {'shard-0': {'leader': 'grpc://h:1', 'replicas_up': 1, 'replicas': 2}}}
"""

from __future__ import annotations

from typing import Any

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._client.fanout import FanOut
from semcache.cluster._client.retry import ShardCaller
from semcache.cluster._client.topology import ShardRoute, refresh_members
from semcache.embeddings import BaseEmbedding


class ClusterAdmin:
    """The admin calls of one :class:`~semcache.DistributedSemanticKV`, over its routes and connections.

    Membership is re-read from each shard's own replicas.  A clear goes to every
    shard's leader, with retries, and needs the client's admin token when the
    cluster has one.  The health calls ask every replica at once, without
    retries: a replica that does not answer within ``connection_timeout`` is
    reported as down.

    Args:
        routes: ``{shard id: route}``, the client's own (:meth:`health_check` caches the leaders it finds there).
        pool: the client's connections.
        fan_out: the client's threads for calls on every shard.
        caller: runs a call on a shard's leader, with retries.
        connection_timeout: seconds each replica has to answer a health call.
        request_timeout: seconds a clear keeps retrying on each shard.
    """

    def __init__(self, routes: dict[str, ShardRoute], pool: ConnectionPool, fan_out: FanOut, caller: ShardCaller, *,
                 connection_timeout: float, request_timeout: float) -> None:
        self._routes = routes
        self._pool = pool
        self._fan_out = fan_out
        self._caller = caller
        self._connection_timeout = connection_timeout
        self._request_timeout = request_timeout

    def refresh_topology(self) -> None:
        """Re-read every shard's live members from its own replicas (the cached leaders are kept while members).

        Raises:
            ShardUnavailableError: no known replica of some shard answered.
        """
        self._pool.check_open()
        for route in self._routes.values():
            refresh_members(self._pool, route)

    def clear(self, scope_prefix: str) -> int:
        """A clear on every shard's leader; how many entries it removed.  Fails if any shard fails, after trying
        them all."""
        self._pool.check_open()
        outcome = self._fan_out.run(
            sorted(self._routes),  # the hash ring's order, as every fan-out of the client
            lambda shard_id: self._caller.run(shard_id, lambda node: node.clear(scope_prefix), leader=True,
                                              timeout=self._request_timeout),
            timeout=self._request_timeout,
        )
        return sum(outcome.complete().values())

    def replica_health(self) -> dict[str, dict[str, Any]]:
        """``{shard: {replica: health dict}}`` of every replica, asked all at once; one that did not answer
        has ``healthy: False`` and an ``error``."""
        self._pool.check_open()
        timeout = self._connection_timeout
        replicas = [(route.id, replica) for route in self._routes.values() for replica in route.replicas]
        out: dict[str, dict[str, Any]] = {shard_id: {} for shard_id, _ in replicas}
        if not replicas:
            return out
        outcome = self._fan_out.run([replica.rpc for _, replica in replicas], self._pool.health_of, timeout=timeout)
        for shard_id, replica in replicas:
            out[shard_id][replica.id] = outcome.answers.get(replica.rpc) or {
                "rpc": replica.rpc, "healthy": False, "error": f"no answer within {timeout:.1f}s"}
        return out

    def health_check(self) -> dict[str, Any]:
        """:func:`leader_report` of every replica's health; the leaders it finds become the cached ones."""
        report = leader_report(self.replica_health())
        for shard_id, shard in report["shards"].items():
            if shard["leader"]:
                self._routes[shard_id].leader = shard["leader"]
        return report


def leader_report(health: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per shard, the leader (a replica that says it leads) and how many replicas answered; healthy when
    every shard has a leader."""
    shards: dict[str, dict[str, Any]] = {}
    for shard_id, replicas in health.items():
        leaders = [h["rpc"] for h in replicas.values() if h.get("role") == "leader"]
        up = sum("error" not in h for h in replicas.values())
        shards[shard_id] = {"leader": leaders[0] if leaders else None, "replicas_up": up, "replicas": len(replicas)}
    return {"healthy": all(s["leader"] for s in shards.values()), "shards": shards}


def stats_report(answers: dict[str, dict[str, Any]], missing: list[str], embedding: BaseEmbedding,
                 read_from: str) -> dict[str, Any]:
    """The client's ``stats()``: each shard's stats (``answers``), their total entries, the shards that did
    not answer, and the client's own model and reads."""
    return {
        "node": "cluster",
        "shards": answers,
        "missing_shards": missing,
        "entries": sum(int(s.get("entries", 0)) for s in answers.values()),
        "model_id": embedding.model_id,
        "dim": embedding.dim,
        "read_from": read_from,
        "embedding_model_calls": embedding.model_calls,
        "embedding_memo_hits": embedding.memo_hits,
    }
