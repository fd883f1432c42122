"""Recovering a shard that lost its quorum: ``semcache cluster recover --shard S`` (:meth:`LocalCluster.recover`).

A shard whose majority is gone for good (machines lost, data destroyed) elects
no leader, and Raft cannot change its membership without one.  The way back,
as etcd's ``--force-new-cluster``:

1. pick the seed: the surviving replica with the most committed log (or the one named);
2. stop every replica of the shard; the cluster file names the seed alone;
3. start the seed with ``--force-membership``: it ignores the members its
   journal and snapshot recorded, so it is a majority of one and leads;
4. it forgets the other members, writes past the recovery point and compacts
   its log, so that no restart or new member replays the old membership;
5. restart the seed as usual, then every other survivor rejoins as a new
   member with an empty data directory (the old one is kept, renamed), catching
   up from the seed.

What is lost: writes the seed never received (acknowledged writes are on a
majority of the old membership; if that whole majority is gone, so are they).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from semcache.cluster._config import Replica
from semcache.cluster._wire import Topology
from semcache.errors import ClusterError, ConfigurationError

if TYPE_CHECKING:
    from semcache.cluster._local.cluster import LocalCluster

FORCE_MEMBERSHIP = "--force-membership"
RECOVERY_KEY = "__semcache_recovery__"  # deleted twice: two log entries past the recovery point


@dataclass
class Recovery:
    """What :func:`recover_shard` did."""

    shard_id: str
    seed: str
    forgotten: list[str] = field(default_factory=list)  # members the seed's table no longer lists
    rejoined: list[str] = field(default_factory=list)  # survivors added back with fresh data
    set_aside: list[str] = field(default_factory=list)  # their old data directories, renamed


def recover_shard(cluster: LocalCluster, shard_id: str, *, survivors: Sequence[str] | None = None,
                  seed: str | None = None, timeout: float = 60.0) -> Recovery:
    """Bring ``shard_id`` back with ``survivors`` (default: every replica the cluster file lists for it).

    Raises:
        ConfigurationError: no such shard, or a survivor or seed that is not one of its replicas.
        ClusterError: the seed did not lead, or did not compact, within ``timeout``.
    """
    config = cluster.config()
    shard = cluster.shard(shard_id)
    names = list(survivors) if survivors else [r.id for r in shard.replicas]
    by_id = {r.id: r for r in shard.replicas}
    strangers = [name for name in [*names, *([seed] if seed else [])] if name not in by_id or name not in names]
    if strangers:
        raise ConfigurationError(f"{', '.join(strangers)}: not a surviving replica of {shard_id} in the cluster file")
    chosen = by_id[seed] if seed else most_advanced(cluster, [by_id[n] for n in names], timeout)
    for replica in shard.replicas:
        cluster.stop(replica.id)
    cluster.files.save(config.with_shard(replace(shard, replicas=(chosen,))))
    recovery = Recovery(shard_id, chosen.id)
    cluster.start(chosen.id, extra_args=(FORCE_MEMBERSHIP,))
    cluster.wait_for_leaders(timeout, watch=[chosen.id])
    recovery.forgotten = _settle(cluster, chosen, timeout)
    cluster.stop(chosen.id)
    cluster.start(chosen.id)
    cluster.wait_for_leaders(timeout, watch=[chosen.id])
    for name in names:
        if name == chosen.id:
            continue
        old = config.data_dir_of(name)
        if old.exists():
            aside = old.with_name(f"{old.name}.before-recovery-{int(time.time())}")
            old.rename(aside)
            recovery.set_aside.append(str(aside))
        cluster.join(shard_id, by_id[name], timeout=timeout)
        recovery.rejoined.append(name)
    return recovery


def most_advanced(cluster: LocalCluster, replicas: list[Replica], timeout: float) -> Replica:
    """The replica with the highest commit index (then applied index), starting those not running.

    Raises:
        ClusterError: none answered within ``timeout``.
    """
    for replica in replicas:
        if cluster.pid(replica.id) is None:
            cluster.start(replica.id)
    deadline = time.monotonic() + timeout
    while True:
        health = cluster.health(timeout=1.0)
        answers = {r.id: health.get(r.id, {}) for r in replicas}
        answered = [r for r in replicas if "error" not in answers[r.id]]
        if len(answered) == len(replicas) or (answered and time.monotonic() >= deadline):
            return max(answered, key=lambda r: (int(answers[r.id].get("commit_index", 0)),
                                                int(answers[r.id].get("applied", 0))))
        if time.monotonic() >= deadline:
            raise ClusterError(f"no surviving replica of {replicas[0].id.rsplit('-', 1)[0]} answered")
        time.sleep(0.3)


def _settle(cluster: LocalCluster, seed: Replica, timeout: float) -> list[str]:
    """On the forced seed: forget the other members, write two entries past the recovery point, compact until
    the log starts after it.  The members forgotten."""
    with cluster.connect(seed.rpc, timeout=max(5.0, cluster.config().commit_timeout + 1)) as node:
        topology = Topology.from_header(node.topology(), node=seed.rpc)
        members = next(s.replicas for s in topology.shards if s.id == topology.answered_for)
        forgotten = [member.id for member in members if member.id != seed.id]
        for member_id in forgotten:
            node.remove_replica(member_id)
        node.delete(RECOVERY_KEY)
        node.delete(RECOVERY_KEY)
        node.call("compact", {})
        deadline = time.monotonic() + timeout
        while not _compacted_past_recovery(node.health()):
            if time.monotonic() >= deadline:
                raise ClusterError(f"{seed.id} did not compact its log past the recovery point within {timeout:.0f}s")
            time.sleep(0.2)
    return forgotten


def _compacted_past_recovery(health: dict[str, object]) -> bool:
    """Whether the replica's log now starts after the index where its forced membership began."""
    forced_at = health.get("membership_forced_at")
    if not isinstance(forced_at, int):
        return False
    first = int(str(health.get("commit_index", 0))) - int(str(health.get("log_len", 0))) + 1
    return first > forced_at
