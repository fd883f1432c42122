"""A node's Prometheus metrics (``semcache node --metrics-port``): its store, its Raft state, its requests.

Every metric is named ``semcache_node_*`` and labelled ``shard`` and
``replica`` (this process's), so one scrape config covers every node.  The
store metrics use the names of :mod:`semcache.metrics`'s ``semcache_store_*``
(:data:`semcache._prometheus.STORE_FIELDS`).  The server also exports the
process's own ``process_*`` and ``python_gc_*`` metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from semcache._prometheus import (
    STORE_FIELDS,
    CollectorRegistry,
    GCCollector,
    Metric,
    MetricsServer,
    ProcessCollector,
    StatField,
    family,
    number,
    serve_registry,
    stat_families,
)
from semcache.errors import SemcacheError

if TYPE_CHECKING:
    from semcache.cluster._node import SemanticKVNode

__all__ = ["NodeCollector", "serve_node_metrics"]

logger = logging.getLogger(__name__)

PREFIX = "semcache_node_"
LABELS = ("shard", "replica")

# The node's stats() (SemanticKVNode.stats): the store's numbers plus what only a node counts.
NODE_FIELDS: tuple[StatField, ...] = STORE_FIELDS + (
    StatField("errors", "errors", "counter", "RPC requests that ended in an error"),
    StatField("capacity", "capacity", "gauge", "Entries kept before eviction (0: no limit)"),
)
# The node's Raft status (ReplicatedShard.status); is_leader is derived from its role.
RAFT_FIELDS: tuple[StatField, ...] = (
    StatField("is_leader", "is_leader", "gauge", "1 while this replica leads its shard"),
    StatField("has_quorum", "has_quorum", "gauge", "1 while this replica sees a majority of its shard"),
    StatField("term", "raft_term", "gauge", "The current Raft term"),
    StatField("commit_index", "commit_index", "gauge", "The Raft commit index"),
    StatField("applied", "applied_index", "gauge", "The last Raft index applied to the store"),
    StatField("last_log_index", "last_log_index", "gauge", "The last Raft index in the log, committed or not"),
    StatField("log_len", "log_entries", "gauge", "Entries in the Raft log (since the last compaction)"),
    StatField("role_changes", "role_changes", "counter", "Role changes (follower, candidate, leader)"),
    StatField("early_elections", "early_elections", "counter",
              "Elections started at once on losing the leader's connection"),
    StatField("snapshots", "snapshots", "counter", "Snapshots written (log compactions)"),
    StatField("last_snapshot_seconds", "last_snapshot_seconds", "gauge", "How long the last snapshot took"),
)


class NodeCollector:
    """A prometheus-client collector of one :class:`~semcache.cluster.SemanticKVNode`, read at each scrape."""

    def __init__(self, node: SemanticKVNode) -> None:
        self.node = node

    @property
    def labels(self) -> tuple[str, str]:
        return self.node.shard.shard_id, self.node.replica_id

    def describe(self) -> Iterator[Metric]:
        """Every family this collector exports, without samples."""
        yield from self._families(None, None)

    def collect(self) -> Iterator[Metric]:
        """The node's stats and Raft status now; a family stays empty when its source failed (a stopping node)."""
        yield from self._families(self._read(self.node.stats), self._read(self.node.shard.status))

    def _read(self, read: Any) -> dict[str, Any] | None:
        try:
            return dict(read())
        except SemcacheError as exc:
            logger.debug("node metrics: %s", exc)
            return None

    def _families(self, stats: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> Iterator[Metric]:
        labels = self.labels
        yield from stat_families(PREFIX, LABELS, [] if stats is None else [(labels, stats)], NODE_FIELDS)
        raft = None if status is None else {**status, "is_leader": status.get("role") == "leader"}
        yield from stat_families(PREFIX, LABELS, [] if raft is None else [(labels, raft)], RAFT_FIELDS)
        lag = family(PREFIX + "replica_lag", "Leader only: Raft entries each member's log is behind the commit",
                     "gauge", (*LABELS, "member"))
        replicas = (status or {}).get("replicas") or {}
        if status is not None and status.get("role") == "leader":
            for member, progress in sorted(replicas.items()):
                if progress.get("lag") is not None:
                    lag.add_metric([*labels, member], number(progress["lag"]))
        yield lag


def serve_node_metrics(node: SemanticKVNode, port: int, host: str, *, allow_remote: bool) -> MetricsServer:
    """Serve ``node``'s metrics and its process's on ``host:port`` (``GET /metrics``).

    Raises:
        ConfigurationError: a non-loopback ``host`` without ``allow_remote`` (the cluster file's), a bad
            port, or the address is in use.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return serve_registry(registry, port, host, allow_remote=allow_remote)
