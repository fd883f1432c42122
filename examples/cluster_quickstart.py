"""Start a local semcache cluster (2 shards × 3 replicas), use it, stop it.

Run::

    .venv/bin/python examples/cluster_quickstart.py

The same from a shell::

    semcache cluster up --shards 2 --replicas 3 --dir /tmp/semcache-demo
    semcache cluster status --dir /tmp/semcache-demo
    semcache cluster down --dir /tmp/semcache-demo
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model loads offline

from semcache import DistributedSemanticKV, SemanticCache  # noqa: E402
from semcache.cluster._local import LocalCluster, format_status  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="semcache-quickstart-") as directory:
        cluster = LocalCluster(directory)
        try:
            leaders = cluster.up(shards=2, replicas=3, embedding="all-MiniLM-L6-v2")
            print("leaders:", leaders)

            # Any one node address is enough: the client fetches the topology from it.
            kv = DistributedSemanticKV(nodes=cluster.addresses()[:1], token=cluster.config().token)
            kv.put("doc:password", "How do I reset my password?")
            kv.put("doc:refund", "What is your refund policy?")
            kv.put("doc:csv", "How do I read a CSV file in Python?")
            for hit in kv.search("I forgot my password", top_k=2):
                print(f"search: {hit.key} similarity={hit.similarity:.3f} from {hit.node}")

            # The LLM cache runs unchanged on the cluster.
            cache = SemanticCache(backend=kv)
            scope = {"tenant": "acme", "model": "gpt-4o-mini"}
            cache.store("How do I reset my password?", "Settings > Security > Reset password.", scope=scope)
            hit = cache.lookup("How can I reset my password?", scope=scope)
            print("cache:", hit.response if hit else None, f"(similarity {hit.similarity:.3f})" if hit else "")

            print(format_status(cluster.status()))
            kv.close()
        finally:
            print("stopped:", cluster.down())


if __name__ == "__main__":
    main()
