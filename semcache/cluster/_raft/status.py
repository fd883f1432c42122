"""A replica's health report: the status dict ``SemanticKVNode`` serves as ``health``.

>>> raw = {"state": 2, "leader": "a:1", "has_quorum": True, "commit_idx": 9, "last_applied": 9, "raft_term": 3}
>>> members = {"r0": Replica("r0", "a:1", "grpc://a:2")}
>>> report = replica_status(raw, members=members, replica_id="r0", shard_id="s0", leader_rpc="grpc://a:2",
...                         counts=StateCounts(4, 9, 0), role_changes=1, snapshots=SnapshotStats())
>>> report["role"], report["healthy"], report["replicas"]["r0"]["lag"]
('leader', True, 0)
>>> catch_up_reason(leader=False, receiving=None, applied=90, leader_commit=1200)
"1110 entries behind the leader's commit index (the bound is 1000)"
>>> catch_up_reason(leader=False, receiving=None, applied=1100, leader_commit=1200) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semcache.cluster._config import Replica
from semcache.cluster._raft.leadership import ROLES
from semcache.cluster._raft.snapshots import SnapshotStats

# A follower further behind its leader's commit index than this serves no read_from="any" read (the client asks
# another replica).  Entries, not writes: one entry carries a batch of writes (up to 64 KiB of them).
CATCH_UP_BOUND = 1000


def catch_up_reason(*, leader: bool, receiving: dict[str, Any] | None, applied: int,
                    leader_commit: int | None) -> str | None:
    """Why a replica is catching up, so serves no ``read_from="any"`` read; None when it may serve them.

    Args:
        leader: the replica leads (a leader is never behind).
        receiving: the snapshot transfer it is receiving or installing (:meth:`.transfer.SnapshotReceiver.status`).
        applied: the last log index it applied.
        leader_commit: the highest commit index a leader sent it (None: no leader heard since it started).
    """
    if leader:
        return None
    if receiving is not None:
        return (f"installing a snapshot from the leader ({receiving['phase']}, {receiving['mb']} of "
                f"{receiving['size_mb']} MB)")
    if leader_commit is None:
        return "no leader heard from since this replica started"
    behind = leader_commit - applied
    if behind > CATCH_UP_BOUND:
        return f"{behind} entries behind the leader's commit index (the bound is {CATCH_UP_BOUND})"
    return None


@dataclass(frozen=True)
class StateCounts:
    """Sizes of a replica's state, read together under its lock."""

    entries: int
    applied_commands: int
    index_queue: int  # hnswlib inserts deferred to idle moments (already searchable)


def replica_status(
    raw: dict[str, Any],
    *,
    members: dict[str, Replica],
    replica_id: str,
    shard_id: str,
    leader_rpc: str | None,
    counts: StateCounts,
    role_changes: int,
    snapshots: SnapshotStats,
) -> dict[str, Any]:
    """Role, leader, term, commit and apply positions, entries, and per-replica progress.

    Args:
        raw: pysyncobj's ``getStatus()`` (:func:`.compat.raw_status`).
    """
    leader = raw.get("leader")
    return {
        "node": replica_id,
        "shard": shard_id,
        "role": ROLES.get(int(raw.get("state", 0)), "follower"),
        "leader": leader_rpc,
        "leader_raft": None if leader is None else str(leader),
        "term": int(raw.get("raft_term") or 0),
        "commit_index": int(raw.get("commit_idx") or 0),
        "applied": int(raw.get("last_applied") or 0),
        "applied_commands": counts.applied_commands,
        "log_len": int(raw.get("log_len") or 0),
        "entries": counts.entries,
        "index_queue": counts.index_queue,
        "has_quorum": bool(raw.get("has_quorum")),
        "healthy": leader is not None and bool(raw.get("has_quorum")),
        "replicas": replica_progress(raw, members, replica_id),
        "role_changes": role_changes,
        "snapshots": snapshots.taken,
        "last_snapshot_seconds": round(snapshots.seconds, 4),
        "last_snapshot_stall_seconds": round(snapshots.stall_seconds, 4),
        "last_snapshot_apply_pause_seconds": round(snapshots.pause_seconds, 4),
    }


def replica_progress(raw: dict[str, Any], members: dict[str, Replica], replica_id: str) -> dict[str, dict[str, Any]]:
    """Per member: how far its log matches the leader's, whether it is connected, and its lag behind the commit."""
    commit = int(raw.get("commit_idx") or 0)
    replicas: dict[str, dict[str, Any]] = {}
    for member in members.values():
        if member.id == replica_id:
            replicas[member.id] = {"match_index": int(raw.get("last_applied") or 0), "connected": True, "lag": 0}
            continue
        match = raw.get("match_idx_server_" + member.raft)
        replicas[member.id] = {
            "match_index": match,
            "next_index": raw.get("next_node_idx_server_" + member.raft),
            "connected": raw.get("partner_node_status_server_" + member.raft) == 2,
            "lag": None if match is None else max(0, commit - int(match)),
        }
    return replicas
