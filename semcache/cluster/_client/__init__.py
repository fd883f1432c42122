"""The cluster client, :class:`DistributedSemanticKV`, in parts that each do one job.

* :mod:`.client`: the API (put/get/search/scan/clear/stats...) and the per-shard request combiners;
* :mod:`.topology`: shard routes, the handshake (``topology``), the cluster's model and value limit;
* :mod:`.connections`: the transport seam (``NodeConnection``, ``connect``) and the pool of connections;
* :mod:`.retry`: one call on one shard through leader changes and unreachable replicas;
* :mod:`.fanout`: one call on every shard at once within a timeout, and :class:`ShardResults`;
* :mod:`.batches`: what one RPC to a shard carries (a lone request or a coalesced batch);
* :mod:`.admin`: every replica's Raft state (``cluster_stats``, ``health_check``).
"""

from semcache.cluster._client.client import DistributedSemanticKV
from semcache.cluster._client.fanout import ShardResults

__all__ = ["DistributedSemanticKV", "ShardResults"]
