"""DistributedSemanticKV against a real local cluster: 2 shards × 3 replicas of node processes.

The cluster is stamped with all-MiniLM-L6-v2 and the client embeds with the
real model, so the cache test judges meaning.  One cluster serves the module;
the test that takes a shard down runs last and brings it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI
from openai import OpenAI
from semcache.integrations.langchain import LangChainSemanticCache
from semcache.integrations.openai import wrap
from support.harness import ClusterHarness, wait_until

from semcache import SemanticCache, SemanticKV
from semcache._engine.backend import Backend
from semcache.cluster._client import DistributedSemanticKV
from semcache.embeddings import HashEmbedding, SentenceTransformerEmbedding
from semcache.errors import AuthenticationError, EmbeddingMismatchError, InvalidInputError, LimitExceededError
from semcache.testing import FakeOpenAIServer, fake_answer

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.timeout(300)]

TOKEN = "client-test-token"
DOCS = {
    "doc:password": "How do I reset my password?",
    "doc:refund": "What is your refund policy for annual plans?",
    "doc:python": "How do I read a CSV file in Python?",
    "doc:rust": "How do I read a CSV file in Rust?",
    "doc:weather": "What will the weather be like in Paris tomorrow?",
    "doc:shipping": "How long does international shipping take?",
    "doc:invoice": "Where can I download my invoices?",
    "doc:delete": "How do I delete my account permanently?",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(
        tmp_path_factory.mktemp("client-cluster"), shards=2, replicas=3, embedding="all-MiniLM-L6-v2", token=TOKEN
    )
    with harness:
        yield harness


@pytest.fixture(scope="module")
def kv(cluster: ClusterHarness, minilm: SentenceTransformerEmbedding) -> DistributedSemanticKV:
    client = cluster.client(embedding=minilm)
    client.clear_all()
    for key, text in DOCS.items():
        client.put(key, text)
    return client


def test_the_client_sees_the_topology_and_the_model(kv: DistributedSemanticKV, cluster: ClusterHarness) -> None:
    assert kv.shard_ids == ("shard-0", "shard-1")
    assert kv.model_id == "sentence-transformers/all-MiniLM-L6-v2" and kv.embedding.dim == 384
    assert isinstance(kv, Backend)
    # Any single node is enough to find the rest.
    one = DistributedSemanticKV([cluster.addresses[-1]], token=TOKEN, embedding=kv.embedding)
    try:
        assert one.get("doc:refund") == DOCS["doc:refund"].encode()
    finally:
        one.close()


def test_keys_spread_over_both_shards_and_read_back(kv: DistributedSemanticKV, cluster: ClusterHarness) -> None:
    owners = {kv.shard_for(key) for key in DOCS}
    assert owners == {"shard-0", "shard-1"}
    for key, text in DOCS.items():
        assert kv.get(key) == text.encode()
        assert kv.exists(key)
    # Each key is stored on its own shard only: ask every shard's leader directly.
    for shard_id in kv.shard_ids:
        with cluster.node(cluster.leader_of(shard_id)) as node:
            stored = set(node.scan("doc:", 100))
        assert stored == {k for k in DOCS if kv.shard_for(k) == shard_id}


def test_search_fans_out_and_merges_by_meaning(kv: DistributedSemanticKV) -> None:
    results = kv.search("I forgot my password, how can I change it?", top_k=3)
    assert results.complete and len(results) == 3
    assert results[0].key == "doc:password"
    assert [r.similarity for r in results] == sorted((r.similarity for r in results), reverse=True)
    spread = kv.search("question", top_k=len(DOCS))
    assert {r.node for r in spread} == {"shard-0", "shard-1"}
    assert {r.key for r in spread} == set(DOCS)
    assert kv.search("password reset", top_k=5, threshold=0.99) == []


def test_scan_merges_keys_from_every_shard(kv: DistributedSemanticKV) -> None:
    assert kv.scan("doc:", 100) == sorted(DOCS)
    assert kv.scan("doc:", 3) == sorted(DOCS)[:3]


def test_seed_helpers_and_delete(kv: DistributedSemanticKV) -> None:
    kv.put_json("cfg:limits", {"rpm": 60, "tiers": ["free", "pro"]})
    kv.put_string("greeting", "hello")
    assert kv.get_json("cfg:limits") == {"rpm": 60, "tiers": ["free", "pro"]}
    assert kv.get_string("greeting") == "hello"
    kv.put("bin", b"\x00\xff raw bytes")
    assert kv.get("bin") == b"\x00\xff raw bytes"
    assert kv.delete("greeting") is True
    assert kv.get("greeting") is None and not kv.exists("greeting")
    assert kv.delete("greeting") is False


def test_scopes_are_hard_partitions_across_shards(kv: DistributedSemanticKV) -> None:
    kv.put("t1:a", "How do I reset my password?", scope="tenant-1")
    kv.put("t2:a", "How do I reset my password?", scope="tenant-2")
    hits = kv.search("reset password", top_k=10, scope="tenant-1")
    assert [r.key for r in hits] == ["t1:a"]
    assert kv.clear_scope("tenant-") == 2
    assert kv.search("reset password", scope="tenant-2") == []
    assert kv.get("doc:password") is not None  # the default scope is untouched


def test_put_many_loads_both_shards_in_batches_and_searches_by_meaning(kv: DistributedSemanticKV) -> None:
    questions = [f"How do I export report number {n} as a PDF?" for n in range(150)]
    items = [(f"bulk:{n}", f"answer {n}", question) for n, question in enumerate(questions)]
    items.append(("bulk:refund", "30 days, no questions asked", "What is the refund window for monthly plans?"))
    before = kv.stats()
    assert kv.put_many(items, scope="bulk") == len(items)
    after = kv.stats()
    assert after["embedding_model_calls"] - before["embedding_model_calls"] == 3  # 151 texts, 64 per model call
    assert sum(s["puts"] for s in after["shards"].values()) - sum(s["puts"] for s in before["shards"].values()) == 151
    assert all(kv.get(key) == value.encode() for key, value, _ in items)
    assert {kv.shard_for(key) for key, _, _ in items} == {"shard-0", "shard-1"}
    hits = kv.search("How long do I have to get my money back on a monthly plan?", top_k=1, scope="bulk")
    assert [h.key for h in hits] == ["bulk:refund"]
    assert kv.search("How long do I have to get my money back on a monthly plan?", top_k=1)[0].key == "doc:refund"
    with pytest.raises(InvalidInputError, match="put_many item 1"):
        kv.put_many([("bulk:ok", "fine"), ("", "an empty key")], scope="bulk")
    assert kv.get("bulk:ok") is None  # nothing of a refused call is stored
    assert kv.clear_scope("bulk") == len(items)


def test_semantic_cache_runs_unchanged_on_the_cluster(kv: DistributedSemanticKV) -> None:
    cache = SemanticCache(backend=kv)
    scope = {"tenant": "acme", "model": "gpt-4o-mini"}
    cache.store("How do I reset my password?", "Settings > Security > Reset password.", scope=scope)
    hit = cache.lookup("How can I reset my password?", scope=scope)
    assert hit is not None and hit.response == "Settings > Security > Reset password." and not hit.exact
    exact = cache.lookup("How do I reset my password?", scope=scope)
    assert exact is not None and exact.exact
    assert cache.lookup("How do I reset my password?", scope={"tenant": "other"}) is None
    assert cache.lookup("How do I cancel my subscription?", scope=scope) is None
    calls: list[str] = []
    answer = cache.get_or_compute("What's the capital of France?", lambda: calls.append("x") or "Paris", scope=scope)
    again = cache.get_or_compute("What is the capital of France?", lambda: calls.append("y") or "Lyon", scope=scope)
    assert (answer, again, calls) == ("Paris", "Paris", ["x"])
    warmed = {"Which plan includes SSO?": "Enterprise", "How do I invite a teammate?": "Settings > Team > Invite."}
    assert cache.store_many(warmed, scope=scope) == [cache.key_for(prompt, scope) for prompt in warmed]
    near = cache.lookup("Which plan comes with SSO?", scope=scope)
    assert near is not None and not near.exact and near.response == "Enterprise"
    assert cache.lookup("How do I invite a teammate?", scope={"tenant": "other"}) is None


def test_follower_reads_eventually_see_an_acknowledged_write(
    cluster: ClusterHarness, minilm: SentenceTransformerEmbedding
) -> None:
    reader = cluster.client(embedding=minilm, read_from="any")
    writer = cluster.client(embedding=minilm)
    writer.put("fresh", "written through the leader")
    # Followers may lag by about a heartbeat; every replica answers within a few polls.
    for _ in range(6):
        assert wait_until(lambda: reader.get("fresh"), 10, interval=0.05) == b"written through the leader"


def test_bad_input_is_refused_and_the_cluster_keeps_its_data(kv: DistributedSemanticKV) -> None:
    with pytest.raises(LimitExceededError):
        kv.put("huge", b"x" * 100_000)  # over the cluster's per-entry value limit (48 KiB)
    with pytest.raises(InvalidInputError):
        kv.put("", "empty key")
    assert kv.get("huge") is None
    assert kv.get("doc:refund") == DOCS["doc:refund"].encode()


def test_a_wrong_token_or_model_is_refused(cluster: ClusterHarness, minilm: SentenceTransformerEmbedding) -> None:
    with pytest.raises(AuthenticationError):
        DistributedSemanticKV(cluster.addresses, token="wrong", embedding=minilm)
    with pytest.raises(AuthenticationError):
        DistributedSemanticKV(cluster.addresses, embedding=minilm)
    with pytest.raises(EmbeddingMismatchError):
        DistributedSemanticKV(cluster.addresses, token=TOKEN, embedding=HashEmbedding(384))


def test_health_check_and_cluster_stats(kv: DistributedSemanticKV) -> None:
    report = kv.health_check()
    assert report["healthy"] is True
    assert all(s["replicas_up"] == 3 and s["leader"] for s in report["shards"].values())
    stats = kv.cluster_stats()
    for replicas in stats.values():
        roles = sorted(h["role"] for h in replicas.values())
        assert roles == ["follower", "follower", "leader"]
        assert len({h["term"] for h in replicas.values()}) == 1
    assert kv.stats()["entries"] >= len(DOCS)


def test_langchain_chat_model_is_cached_on_the_cluster(
    cluster: ClusterHarness, minilm: SentenceTransformerEmbedding
) -> None:
    lc_cache = LangChainSemanticCache(SemanticCache(backend=cluster.client(embedding=minilm)), write_behind=False)
    with FakeOpenAIServer() as server:
        set_llm_cache(lc_cache)
        try:
            llm = ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url, api_key="test", max_retries=0)
            first = llm.invoke("How do I reverse a list in Python?")
            second = llm.invoke("How can I reverse a Python list?")
            assert server.count("chat.completions") == 1
            assert second.content == first.content == fake_answer("gpt-4o-mini", "How do I reverse a list in Python?")
            llm.invoke("How do I sort a list in Python?")
            assert server.count("chat.completions") == 2
        finally:
            set_llm_cache(None)


def test_openai_client_wrapped_with_the_cluster_cache_behaves_as_embedded(
    cluster: ClusterHarness, minilm: SentenceTransformerEmbedding
) -> None:
    questions = [
        "What is the capital of France?",
        "What is the capital of France?",
        "What's the capital city of France?",
        "How do I reverse a list in Python?",
        "What is the capital of France?",
    ]

    def replay(backend: Backend) -> tuple[int, int, list[str]]:
        cache = SemanticCache(backend=backend)
        with FakeOpenAIServer() as server, OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as raw:
            client = wrap(raw, cache=cache)
            answers = []
            for question in questions:
                reply = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                )
                answers.append(str(reply.choices[0].message.content))
                assert client.semcache.flush(10)
            return server.count("chat.completions"), client.semcache.stats.hits, answers

    on_cluster = replay(cluster.client(embedding=minilm))
    with SemanticKV(embedding=minilm) as store:
        embedded = replay(store)
    assert on_cluster == embedded
    calls, hits, answers = on_cluster
    assert hits >= 2 and calls == len(questions) - hits and answers[0] == answers[1] == answers[4]


def test_zz_search_with_a_shard_down_returns_the_rest_and_names_it(
    cluster: ClusterHarness, kv: DistributedSemanticKV, minilm: SentenceTransformerEmbedding, tmp_path: Path
) -> None:
    # Short timeouts so the paused shard is given up quickly, yet long enough for a loaded machine's live shard.
    quick = cluster.client(embedding=minilm, connection_timeout=1.0, search_timeout=3.0, request_timeout=3.0)
    on_shard_0 = {k for k in DOCS if kv.shard_for(k) == "shard-0"}
    for replica_id in cluster.replicas("shard-1"):
        cluster.pause(replica_id)
    try:
        results = quick.search("question", top_k=100)
        assert results.missing_shards == ("shard-1",) and quick.last_missing_shards == ("shard-1",)
        assert {r.node for r in results} == {"shard-0"}
        assert {r.key for r in results if r.key.startswith("doc:")} == on_shard_0
        assert set(quick.scan("doc:", 100)) == on_shard_0
        assert quick.health_check()["healthy"] is False
    finally:
        for replica_id in cluster.replicas("shard-1"):
            cluster.resume(replica_id)
    cluster.leader_of("shard-1")
    after = wait_until(lambda: (r := quick.search("question", top_k=100)).complete and r, 30)
    assert {r.key for r in after if r.key.startswith("doc:")} == set(DOCS)
