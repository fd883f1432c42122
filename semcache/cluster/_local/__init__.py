"""A local cluster of node processes in one directory (``semcache cluster ...``), in parts:

* :mod:`.files`: the directory, the cluster file (free ports, the generated secret), pid/command/log files;
* :mod:`.supervisor`: starting, finding (pid files), signalling and stopping node processes;
* :mod:`.watch`: asking the nodes how they are (health, leaders, status) and waiting until they are as needed;
* :mod:`.status`: what the replicas report, as ``cluster status`` shows it;
* :mod:`.recovery`: bringing back a shard that lost its quorum for good;
* :mod:`.cluster`: :class:`LocalCluster`, the facade the CLI, the harness and the benchmarks use.
"""

from semcache.cluster._local.cluster import DEFAULT_UP_TIMEOUT, LocalCluster
from semcache.cluster._local.files import CLUSTER_FILE, DEFAULT_REPLICAS, DEFAULT_SHARDS, free_ports, make_config
from semcache.cluster._local.status import ReplicaStatus, ShardStatus, format_status
from semcache.cluster._local.supervisor import DEFAULT_STOP_TIMEOUT

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_REPLICAS",
    "DEFAULT_SHARDS",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_UP_TIMEOUT",
    "LocalCluster",
    "ReplicaStatus",
    "ShardStatus",
    "format_status",
    "free_ports",
    "make_config",
]
