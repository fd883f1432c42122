"""The verifier decides in the cache layer: a cluster gives the same answers as the embedded store for the same data.

A real 2-shard cluster of node processes (stamped all-MiniLM-L6-v2) and an
embedded store get the same entries; every lookup must hit or miss alike, with
the same verifier score.  A wrong hit reported through the cluster is deleted
on every replica.
"""

from __future__ import annotations

import pytest
from support.harness import ClusterHarness, wait_until

from semcache import SemanticCache, SemanticKV

pytestmark = [pytest.mark.model, pytest.mark.slow]

CACHED = {
    "What is the capital of Japan?": "Tokyo",
    "How do I enable dark mode?": "Settings > Display > Dark.",
    "Is it safe to eat raw eggs?": "Mostly, if pasteurised.",
    "How many legs does a spider have?": "Eight.",
    "What was the GDP of France in 2019?": "About 2.7 trillion USD.",
    "How do I read a file in Python?": "open(path).read()",
}
LOOKUPS = (
    "what's the capital of japan",
    "How can I enable dark mode?",
    "How do I disable dark mode?",
    "Is it not safe to eat raw eggs?",
    "how many legs do spiders have",
    "What was the GDP of France in 2020?",
    "How do I read a file in Rust?",
    "Recommend a good science fiction novel.",
)


def test_a_cluster_answers_as_the_embedded_store_does(tmp_path, minilm):
    with ClusterHarness(tmp_path, shards=2, replicas=3, embedding="all-MiniLM-L6-v2") as cluster:
        on_cluster = SemanticCache(cluster.client(embedding=minilm))
        embedded = SemanticCache(SemanticKV(embedding=minilm, purge_interval=3600))
        for cache in (on_cluster, embedded):
            cache.store_many(CACHED, scope={"tenant": "acme"})
        for prompt in LOOKUPS:
            there = on_cluster.explain(prompt, scope={"tenant": "acme"})
            here = embedded.explain(prompt, scope={"tenant": "acme"})
            assert (there.hit is None) == (here.hit is None), prompt
            assert there.candidate_prompt == here.candidate_prompt, prompt
            assert there.score == pytest.approx(here.score, abs=1e-6) if here.score is not None else there.score is None
        hits = sum(embedded.explain(p, scope={"tenant": "acme"}).hit is not None for p in LOOKUPS)
        assert 2 <= hits < len(LOOKUPS)  # paraphrases hit, hard negatives miss, on both

        hit = on_cluster.lookup("what's the capital of japan", scope={"tenant": "acme"})
        assert hit is not None and on_cluster.report_wrong_hit(hit)
        (report,) = on_cluster.reports()
        assert report.cached_prompt == "What is the capital of Japan?"
        # Deleted through Raft: every replica of the key's shard converges without it.
        shard = on_cluster.backend.ring.shard_for(hit.key)

        def gone_everywhere() -> bool:
            for replica in cluster.replicas(shard):
                with cluster.node(replica) as node:
                    if node.exists(hit.key, read_from="any"):
                        return False
            return True

        wait_until(gone_everywhere, what="the reported entry deleted on every replica")
        embedded.close()
