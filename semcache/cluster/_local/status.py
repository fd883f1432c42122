"""What ``semcache cluster status`` shows: each shard's leader and each replica's progress, and the table.

>>> print(format_status([ShardStatus("shard-0", "grpc://h:1", 3, 10, 5, (
...     ReplicaStatus("shard-0-r0", "grpc://h:1", 101, "leader", 3, 10, 10, 5, 0),
...     ReplicaStatus("shard-0-r1", "grpc://h:2", None, error="down"),
... ))]))
shard-0: leader grpc://h:1  term 3  commit 10  entries 5
  replica              pid role        term  applied   lag to index  rpc
  shard-0-r0           101 leader         3       10     0        -  grpc://h:1
  shard-0-r1             - DOWN           -        -     -        -  grpc://h:2

A replica catching up says why, and a leader sending a snapshot says how far it got, under its row:

>>> print(format_status([ShardStatus("shard-0", "grpc://h:1", 3, 9000, 5, (
...     ReplicaStatus("shard-0-r0", "grpc://h:1", 101, "leader", 3, 9000, 9000, 5, 0,
...                   sending=("a snapshot to shard-0-r1: 340.0 of 1020.0 MB (33 %), 85.0 MB/s",)),
...     ReplicaStatus("shard-0-r1", "grpc://h:2", 102, "follower", 3, 0, 0, 0, 9000,
...                   catching_up="installing a snapshot from the leader (receiving, 339.5 of 1020.0 MB)"),
... ))]))
shard-0: leader grpc://h:1  term 3  commit 9000  entries 5
  replica              pid role        term  applied   lag to index  rpc
  shard-0-r0           101 leader         3     9000     0        -  grpc://h:1
      sending a snapshot to shard-0-r1: 340.0 of 1020.0 MB (33 %), 85.0 MB/s
  shard-0-r1           102 follower       3        0  9000        -  grpc://h:2
      catching up: installing a snapshot from the leader (receiving, 339.5 of 1020.0 MB)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semcache.cluster._config import Replica, ShardConfig


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as ``cluster status`` shows it (``error`` set when it did not answer)."""

    id: str
    rpc: str
    pid: int | None
    role: str | None = None
    term: int | None = None
    commit_index: int | None = None
    applied: int | None = None
    entries: int | None = None
    lag: int | None = None
    error: str | None = None
    index_queue: int | None = None  # HNSW inserts deferred to idle moments (the vectors are already searchable)
    catching_up: str | None = None  # why it serves no read_from="any" read now (its health's "catching_up")
    sending: tuple[str, ...] = ()  # snapshots it is sending to other replicas, with their progress


@dataclass(frozen=True)
class ShardStatus:
    """A shard's leader and its replicas' progress."""

    id: str
    leader: str | None
    term: int | None
    commit_index: int | None
    entries: int | None
    replicas: tuple[ReplicaStatus, ...]


def shard_status(shard: ShardConfig, health: Mapping[str, dict[str, Any]],
                 pid_of: Callable[[str], int | None]) -> ShardStatus:
    """A shard's status from its replicas' health dicts (``{replica id: health}``); lag is behind the leader."""
    rows = {r.id: health[r.id] for r in shard.replicas}
    leader_id = next((rid for rid, h in rows.items() if h.get("role") == "leader"), None)
    lead = rows.get(leader_id) if leader_id else None
    replicas = []
    for replica in shard.replicas:
        h = rows[replica.id]
        lag = None
        if lead is not None and "error" not in h:
            lag = max(0, int(lead.get("commit_index", 0)) - int(h.get("applied", 0)))
        replicas.append(ReplicaStatus(
            replica.id, replica.rpc, pid_of(replica.id), h.get("role"), h.get("term"),
            h.get("commit_index"), h.get("applied"), h.get("entries"), lag, h.get("error"),
            h.get("index_queue"), h.get("catching_up"), snapshots_sent(shard, h.get("snapshot_sends") or {}),
        ))
    return ShardStatus(
        shard.id,
        None if lead is None else str(lead.get("leader") or _replica(shard, leader_id).rpc),
        None if lead is None else lead.get("term"),
        None if lead is None else lead.get("commit_index"),
        None if lead is None else lead.get("entries"),
        tuple(replicas),
    )


SENDING_PHASES = ("receiving", "preparing", "ready")  # a transfer's phases before it is installed or fails


def snapshots_sent(shard: ShardConfig, sends: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The snapshot transfers a leader has in progress (its health's ``snapshot_sends``), one line each."""
    names = {replica.raft: replica.id for replica in shard.replicas}
    return tuple(
        f"a snapshot to {names.get(raft, raft)}: {s['mb']} of {s['size_mb']} MB ({s['percent']:.0f} %), "
        f"{s['mb_per_s'] or 0} MB/s"
        for raft, s in sorted(sends.items()) if s.get("phase") in SENDING_PHASES
    )


def agreed_leader(health: Sequence[dict[str, Any]], replicas: Sequence[Replica]) -> str | None:
    """The shard's leader if a replica says it leads and has a quorum."""
    for h, replica in zip(health, replicas, strict=True):
        if h.get("role") == "leader" and h.get("has_quorum", True):
            return str(h.get("leader") or replica.rpc)
    return None


def format_status(shards: Sequence[ShardStatus]) -> str:
    """``cluster status`` as a text table."""
    lines = []
    for shard in shards:
        lines.append(
            f"{shard.id}: leader {shard.leader or 'NONE'}  term {_show(shard.term)}  "
            f"commit {_show(shard.commit_index)}  entries {_show(shard.entries)}"
        )
        lines.append(
            f"  {'replica':<16} {'pid':>7} {'role':<10} {'term':>5} {'applied':>8} {'lag':>5} {'to index':>8}  rpc"
        )
        for r in shard.replicas:
            role = r.role or ("DOWN" if r.error else "?")
            lines.append(
                f"  {r.id:<16} {_show(r.pid):>7} {role:<10} {_show(r.term):>5} {_show(r.applied):>8} "
                f"{_show(r.lag):>5} {_show(r.index_queue):>8}  {r.rpc}"
            )
            lines.extend(f"      sending {line}" for line in r.sending)
            if r.catching_up:
                lines.append(f"      catching up: {r.catching_up}")
    return "\n".join(lines)


def _replica(shard: ShardConfig, replica_id: str | None) -> Replica:
    return next(r for r in shard.replicas if r.id == replica_id)


def _show(value: object) -> str:
    return "-" if value is None else str(value)
