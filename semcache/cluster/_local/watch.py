"""Asking a local cluster's nodes how they are, and waiting until they are as needed.

The operator's view of :class:`~semcache.cluster.LocalCluster`'s nodes: each
replica's health, the shards' leaders, the ``cluster status`` rows
(:mod:`~semcache.cluster._local.status` formats them), and the waits that
``up``, ``add-replica`` and ``recover`` need: every shard has a leader, a node
answers, a replica caught up.  A wait on a node that was just started gives up
as soon as that node exits, quoting the end of its log, instead of lasting its
whole timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._config import Replica
from semcache.cluster._local.files import ClusterDirectory
from semcache.cluster._local.status import ShardStatus, agreed_leader, shard_status
from semcache.cluster._local.supervisor import NodeSupervisor
from semcache.errors import ClusterError

if TYPE_CHECKING:
    from semcache.cluster._flight import NodeClient

POLL = 0.1


class ClusterWatch:
    """Talks to one cluster directory's nodes as its operator, and waits on what they report.

    Args:
        files: the cluster directory (the cluster file, logs).
        nodes: its node processes (pids, which ones exited).
    """

    def __init__(self, files: ClusterDirectory, nodes: NodeSupervisor) -> None:
        self.files = files
        self.nodes = nodes

    def connect(self, address: str, timeout: float = 2.0) -> NodeClient:
        """A NodeClient for ``address`` with the cluster's admin token (the operator's credential: it admits
        every call), or its data token when the file has no admin token; the caller closes it."""
        from semcache.cluster._flight import NodeClient

        config = self.files.config()
        return NodeClient(address, token=config.admin_token or config.token or None, timeout=timeout)

    def _pool(self, timeout: float) -> ConnectionPool:
        """Connections with the cluster's admin token, closed when the pool is."""
        return ConnectionPool(lambda address: self.connect(address, timeout), owner="this LocalCluster's pool")

    def health(self, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
        """``{replica id: health dict}`` of every replica; ``{"error": ...}`` for those that did not answer."""
        with self._pool(timeout) as pool:
            return {replica.id: pool.health_of(replica.rpc) for replica in self.files.config().replicas()}

    def leaders(self, timeout: float = 2.0) -> dict[str, str | None]:
        """``{shard id: leader rpc address or None}``, as the replicas report it."""
        health = self.health(timeout)
        return {shard.id: agreed_leader([health[r.id] for r in shard.replicas], shard.replicas)
                for shard in self.files.config().shards}

    def status(self, timeout: float = 2.0) -> list[ShardStatus]:
        """Per shard: leader, term, commit index, entries, and each replica's lag behind the leader."""
        health = self.health(timeout)
        return [shard_status(shard, health, self.nodes.pid) for shard in self.files.config().shards]

    def wait_for_leaders(self, timeout: float, on_wait: Callable[[dict[str, str | None]], None] | None = None, *,
                         watch: Sequence[str] = ()) -> dict[str, str]:
        """Block until every shard has a leader; ``{shard: leader rpc}`` (``watch``: the nodes just started).

        Raises:
            ClusterError: a watched node exited, or some shard had no leader after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            leaders = self.leaders(timeout=1.0)
            if all(leaders.values()):
                return {shard: leader for shard, leader in leaders.items() if leader}
            missing = [shard for shard, leader in leaders.items() if not leader]
            exited = self.nodes.exited(watch)
            if exited:
                raise ClusterError(f"no leader for {missing}: {self.exit_report(exited)}")
            if on_wait is not None:
                on_wait(leaders)
            if time.monotonic() >= deadline:
                raise ClusterError(f"no leader after {timeout:.0f}s for {missing}; see the logs in {self.files.logs}")
            time.sleep(POLL * 3)

    def wait_answering(self, replica: Replica, timeout: float) -> None:
        """Wait until ``replica``'s node answers on its RPC address (so its Raft port listens too).

        Raises:
            ClusterError: the node exited, or did not answer within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._pool(1.0) as pool:
            while "error" in pool.health_of(replica.rpc):
                if self.nodes.exited([replica.id]):
                    raise ClusterError(f"node {replica.id} did not start: {self.exit_report([replica.id])}")
                if time.monotonic() >= deadline:
                    raise ClusterError(f"node {replica.id} did not answer within {timeout:.0f}s")
                time.sleep(POLL)

    def wait_caught_up(self, replica_id: str, timeout: float) -> int:
        """Block until ``replica_id`` has applied everything its leader had committed when asked; the lag seen.

        Raises:
            ClusterError: it did not catch up within ``timeout``.
        """
        shard = self.files.config().shard_of(replica_id)
        deadline = time.monotonic() + timeout
        target: int | None = None
        while time.monotonic() < deadline:
            with self._pool(1.0) as pool:
                health = {r.id: pool.health_of(r.rpc) for r in shard.replicas}
            lead = next((h for h in health.values() if h.get("role") == "leader"), None)
            if lead is not None and target is None:
                target = int(lead.get("commit_index", 0))
            mine = health.get(replica_id, {})
            if target is not None and "error" not in mine and int(mine.get("applied", -1)) >= target:
                return 0
            time.sleep(POLL * 2)
        raise ClusterError(f"{replica_id} did not catch up to index {target} within {timeout:.0f}s")

    def exit_report(self, exited: Sequence[str]) -> str:
        """Which nodes exited and, for each, the last line of its log (the reason, usually)."""
        reports = []
        for replica_id in exited:
            tail = " / ".join(self.files.log_tail(replica_id))
            said = f"its log ends with: {tail}" if tail else "its log is empty"
            reports.append(f"node {replica_id} exited; {said} (log: {self.files.log_file(replica_id)})")
        return "; ".join(reports)
