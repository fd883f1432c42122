"""The cluster client, :class:`DistributedSemanticKV`, in parts that each do one job.

* :mod:`.client`: the API (put/get/search/scan/clear/stats...), wired to the parts below;
* :mod:`.topology`: shard routes, the handshake (``topology``), the cluster's model and value limit;
* :mod:`.connections`: the transport seam (``NodeConnection``, ``connect``) and the pool of connections;
* :mod:`.retry`: one call on one shard through leader changes and unreachable replicas;
* :mod:`.fanout`: one call on every shard at once within a timeout, and :class:`ShardResults`;
* :mod:`.batches`: what one RPC to a shard carries (a lone request or a coalesced batch);
* :mod:`.admin`: the admin calls (``refresh_topology``, ``clear_*``, ``cluster_stats``, ``health_check``, ``stats``).
"""

from semcache.cluster._client.client import DistributedSemanticKV
from semcache.cluster._client.fanout import ShardResults

__all__ = ["DistributedSemanticKV", "ShardResults"]
