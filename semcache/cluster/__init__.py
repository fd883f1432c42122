"""The cluster: shards that are pysyncobj Raft groups, and the client that routes to them.

Public names:

* :class:`DistributedSemanticKV`: the client, with the embedded store's API;
  :class:`ShardResults` is what its fan-out calls return.
* :class:`ClusterConfig` (with :class:`ShardConfig` and :class:`Replica`): the cluster file.
* :class:`SemanticKVNode`: one replica of one shard serving clients (loads
  pysyncobj and pyarrow, so it is imported on first use).
* :class:`LocalCluster`: start, watch and stop a cluster of node processes on this host.

The client itself needs pyarrow only to connect (the default transport), so
``import semcache`` never loads pysyncobj or pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from semcache.cluster._client import DistributedSemanticKV, ShardResults
from semcache.cluster._config import ClusterConfig, Replica, ShardConfig

if TYPE_CHECKING:
    from semcache.cluster._local import LocalCluster
    from semcache.cluster._node import SemanticKVNode

__all__ = [
    "ClusterConfig",
    "DistributedSemanticKV",
    "LocalCluster",
    "Replica",
    "SemanticKVNode",
    "ShardConfig",
    "ShardResults",
]


def __getattr__(name: str) -> Any:
    if name == "SemanticKVNode":
        from semcache.cluster._node import SemanticKVNode

        return SemanticKVNode
    if name == "LocalCluster":
        from semcache.cluster._local import LocalCluster

        return LocalCluster
    raise AttributeError(f"module 'semcache.cluster' has no attribute {name!r}")
