"""The client's view of every replica's Raft state: ``cluster_stats`` and ``health_check``.

>>> leader_report({"shard-0": {"r0": {"rpc": "grpc://h:1", "role": "leader"},
...                            "r1": {"rpc": "grpc://h:2", "healthy": False, "error": "down"}}})
{'healthy': True, 'shards': {'shard-0': {'leader': 'grpc://h:1', 'replicas_up': 1, 'replicas': 2}}}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._client.fanout import FanOut
from semcache.cluster._client.topology import ShardRoute


def replica_health(
    routes: Iterable[ShardRoute], pool: ConnectionPool, fan_out: FanOut, *, timeout: float
) -> dict[str, dict[str, Any]]:
    """``{shard: {replica: health dict}}`` of every replica, asked all at once; one that did not answer
    has ``healthy: False`` and an ``error``."""
    replicas = [(route.id, replica) for route in routes for replica in route.replicas]
    out: dict[str, dict[str, Any]] = {shard_id: {} for shard_id, _ in replicas}
    if not replicas:
        return out
    outcome = fan_out.run([replica.rpc for _, replica in replicas], pool.health_of, timeout=timeout)
    for shard_id, replica in replicas:
        out[shard_id][replica.id] = outcome.answers.get(replica.rpc) or {
            "rpc": replica.rpc, "healthy": False, "error": f"no answer within {timeout:.1f}s"}
    return out


def leader_report(health: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per shard, the leader (a replica that says it leads) and how many replicas answered; healthy when
    every shard has a leader."""
    shards: dict[str, dict[str, Any]] = {}
    for shard_id, replicas in health.items():
        leaders = [h["rpc"] for h in replicas.values() if h.get("role") == "leader"]
        up = sum("error" not in h for h in replicas.values())
        shards[shard_id] = {"leader": leaders[0] if leaders else None, "replicas_up": up, "replicas": len(replicas)}
    return {"healthy": all(s["leader"] for s in shards.values()), "shards": shards}
