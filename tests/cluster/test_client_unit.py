"""DistributedSemanticKV routing, merging and retries, in-process against fake nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.fake_nodes import FakeCluster

from semcache import SemanticCache, SemanticKV
from semcache._engine.backend import Backend
from semcache.cluster._client import DistributedSemanticKV, ShardResults
from semcache.cluster._client.topology import embedding_for_cluster
from semcache.cluster._wire import WIRE_VERSION
from semcache.embeddings import HashEmbedding
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ConfigurationError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    NoQuorumError,
    NotLeaderError,
    ShardUnavailableError,
)

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster(shards=2, replicas=3)
    yield fake
    fake.close()


def make_client(cluster: FakeCluster, **kwargs: object) -> DistributedSemanticKV:
    token = kwargs.pop("token", None)
    return DistributedSemanticKV(
        ["fake://shard-0/0"],
        connect=lambda address: cluster.connect(address, token),  # type: ignore[arg-type]
        clock=cluster.clock,
        sleep=cluster.clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(cluster: FakeCluster) -> Iterator[DistributedSemanticKV]:
    kv = make_client(cluster)
    yield kv
    kv.close()


def test_keys_land_on_the_shard_the_ring_names(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        assert client.put(key, f"value {key}") is True
    for key in keys:
        owner = cluster.shards[client.shard_for(key)]
        other = next(s for s in cluster.shards.values() if s is not owner)
        assert owner.kv.get(key) == f"value {key}".encode()
        assert other.kv.get(key) is None
        assert client.get(key) == f"value {key}".encode()
    assert {client.shard_for(k) for k in keys} == {"shard-0", "shard-1"}


def test_satisfies_the_backend_protocol_and_the_seed_helpers(client: DistributedSemanticKV) -> None:
    assert isinstance(client, Backend)
    client.put_json("j", {"a": [1, 2]})
    client.put_string("s", "hello")
    assert client.get_json("j") == {"a": [1, 2]}
    assert client.get_string("s") == "hello"
    assert client.exists("s") and not client.exists("nope")
    assert client.delete("s") is True and client.get("s") is None and client.delete("s") is False


def test_a_follower_redirect_is_followed_and_the_leader_cached(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    shard = cluster.shards["shard-1"]
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-1")
    shard.leader = shard.replicas[2]  # a new leader the client has not heard of
    client.put(key, "v1")
    assert client.leader_of("shard-1") == shard.replicas[2]
    assert cluster.calls[(shard.replicas[2], "put")] == 1
    before = cluster.calls[(shard.replicas[0], "put")]
    client.put(key, "v2")
    assert cluster.calls[(shard.replicas[0], "put")] == before  # straight to the cached leader
    assert client.get(key) == b"v2"


def test_writes_ride_through_a_leader_crash_until_the_new_election(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-0")
    client.put(key, "before")
    shard = cluster.shards["shard-0"]
    cluster.kill(shard.replicas[0], elect=shard.replicas[1], after=1.5)
    start = cluster.clock()
    client.put(key, "after")
    assert cluster.clock() - start >= 1.5  # it backed off until the election
    assert client.leader_of("shard-0") == shard.replicas[1]
    assert client.get(key) == b"after"


class GatedSearchNode:
    """A fake node whose plain ``search`` blocks until ``gate`` opens (a search in flight)."""

    entered = threading.Event()

    def __init__(self, node: Any, gate: threading.Event) -> None:
        self.node, self.gate = node, gate

    def search(self, *args: Any, **kwargs: Any) -> Any:
        GatedSearchNode.entered.set()
        assert self.gate.wait(10)
        return self.node.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


def test_concurrent_searches_share_one_search_many_per_shard_and_each_gets_its_own_hits(
    cluster: FakeCluster,
) -> None:
    gate = threading.Event()
    kv = DistributedSemanticKV(
        ["fake://shard-0/0"],
        connect=lambda address: GatedSearchNode(cluster.connect(address), gate),  # type: ignore[arg-type]
        clock=cluster.clock, sleep=cluster.clock.sleep,
    )
    gate.set()
    for word in WORDS:
        kv.put(f"doc:{word}", f"a note about {word}")
    expected = {word: [(h.key, h.similarity) for h in kv.search(f"a note about {word}", top_k=3)] for word in WORDS}
    gate.clear()
    GatedSearchNode.entered.clear()
    results: dict[str, list[tuple[str, float]]] = {}

    def search(word: str) -> None:
        results[word] = [(h.key, h.similarity) for h in kv.search(f"a note about {word}", top_k=3)]

    first = threading.Thread(target=search, args=(WORDS[0],))
    first.start()  # a lone search: sent at once, one plain search per shard, now in flight
    assert GatedSearchNode.entered.wait(10)
    others = [threading.Thread(target=search, args=(word,)) for word in WORDS[1:7]]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while any(s.queued < 6 for s in kv._searchers.values()) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert [s.queued for s in kv._searchers.values()] == [6, 6]  # each search queued on both shards
    before = sum(n for (address, method), n in cluster.calls.items() if method == "search_many")
    gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results == {word: expected[word] for word in WORDS[:7]}  # each caller got its own hits
    batches = sum(n for (address, method), n in cluster.calls.items() if method == "search_many") - before
    assert batches == 2  # the six queued searches: one search_many on each shard
    kv.close()


class GatedNode:
    """A fake node whose ``put`` calls block until ``gate`` opens (writes in flight), and whose first
    ``put_many`` may answer every item with ``NotLeaderError`` (leadership changed before commit)."""

    entered = threading.Event()

    def __init__(self, node: Any, gate: threading.Event, refuse_first_batch: list[bool]) -> None:
        self.node, self.gate, self.refuse_first_batch = node, gate, refuse_first_batch

    def put(self, *args: Any, **kwargs: Any) -> None:
        GatedNode.entered.set()
        assert self.gate.wait(10)
        self.node.put(*args, **kwargs)

    def put_many(self, items: list[Any]) -> list[Any]:
        if self.refuse_first_batch:
            self.refuse_first_batch.pop()
            return [NotLeaderError("leadership changed", shard_id="shard-0", leader_hint=None)] * len(items)
        return list(self.node.put_many(items))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


@pytest.mark.parametrize("refuse_first_batch", [False, True])
def test_concurrent_puts_to_one_shard_share_one_put_many_and_each_is_stored(
    cluster: FakeCluster, refuse_first_batch: bool
) -> None:
    gate = threading.Event()
    refusals = [True] if refuse_first_batch else []
    kv = DistributedSemanticKV(
        ["fake://shard-0/0"],
        connect=lambda address: GatedNode(cluster.connect(address), gate, refusals),  # type: ignore[arg-type]
        clock=cluster.clock, sleep=cluster.clock.sleep,
    )
    keys = [f"k{i}" for i in range(200) if kv.shard_for(f"k{i}") == "shard-0"][:7]
    threads = [threading.Thread(target=kv.put, args=(key, f"value of {key}")) for key in keys]
    GatedNode.entered.clear()
    threads[0].start()  # a lone put: sent at once, and now in flight
    assert GatedNode.entered.wait(10)
    leader = cluster.shards["shard-0"].leader
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while kv._writers["shard-0"].queued < 6 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert [kv.get(key) for key in keys] == [f"value of {key}".encode() for key in keys]
    assert cluster.calls[(leader, "put")] == 1
    assert cluster.calls[(leader, "put_many")] == 1  # the six queued went in one call (once more if refused)
    assert not refusals
    kv.close()


def test_a_new_client_learns_every_shard_s_live_members_not_only_its_seed_s(cluster: FakeCluster) -> None:
    """A node knows other shards only from its cluster file, so the client asks each shard itself."""
    cluster.shards["shard-1"].replicas.append("fake://shard-1/3")  # add-replica on shard-1, after the file
    seeded_elsewhere = make_client(cluster)  # the seed is a shard-0 node
    try:
        replicas = [r.rpc for r in seeded_elsewhere._routes["shard-1"].replicas]
        assert "fake://shard-1/3" in replicas and len(replicas) == 4
        assert cluster.calls[("fake://shard-1/0", "topology")] == 1  # asked once, at construction
    finally:
        seeded_elsewhere.close()


def test_a_new_client_starts_with_a_shard_down(cluster: FakeCluster) -> None:
    for address in cluster.shards["shard-1"].replicas:
        cluster.kill(address)
    kv = make_client(cluster)  # shard-1 cannot be asked; its file members are kept
    try:
        assert [r.rpc for r in kv._routes["shard-1"].replicas] == cluster.file_replicas["shard-1"]
    finally:
        kv.close()


def test_refresh_topology_learns_new_replicas(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    shard = cluster.shards["shard-0"]
    old = list(shard.replicas)
    shard.replicas.append("fake://shard-0/3")  # add-replica
    client.refresh_topology()
    # Then the three original replicas are removed and gone: only the one learnt by the refresh is left.
    shard.replicas, shard.leader = ["fake://shard-0/3"], "fake://shard-0/3"
    for address in old:
        shard.down.add(address)
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-0")
    client.put(key, "v")
    assert client.leader_of("shard-0") == "fake://shard-0/3"
    assert client.get(key) == b"v"


def test_a_write_without_quorum_fails_after_the_timeout_and_stores_nothing(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-0")
    shard = cluster.shards["shard-0"]
    cluster.kill(shard.replicas[1])
    cluster.kill(shard.replicas[2])
    start = cluster.clock()
    with pytest.raises(NoQuorumError) as info:
        client.put(key, "lost")
    assert info.value.shard_id == "shard-0" and info.value.retryable
    assert client.request_timeout <= cluster.clock() - start < client.request_timeout + 1
    assert shard.kv.get(key) is None


def test_put_many_embeds_in_batches_and_sends_each_shard_its_puts_64_at_a_time(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    items = [(f"k{i}", f"note {i} about {WORDS[i % len(WORDS)]}") for i in range(300)]
    sent = [*items, ("k7", "note 7, again")]
    model_calls = client.embedding.model_calls
    assert client.put_many(sent) == 301
    assert client.embedding.model_calls - model_calls == 5  # 301 texts, 64 per model call
    for shard_id, shard in cluster.shards.items():
        mine = [key for key, _ in sent if client.shard_for(key) == shard_id]
        assert 100 < len(mine) < 200
        assert cluster.calls[(shard.leader, "put_many")] + cluster.calls[(shard.leader, "put")] == -(-len(mine) // 64)
        assert shard.kv.stats()["entries"] == len(set(mine))
    assert client.get("k7") == b"note 7, again"  # a key given twice: the later value wins, as with put
    assert client.get("k250") == items[250][1].encode()
    assert client.search("note 42 about", top_k=1)[0].key == "k42"


def test_put_many_checks_every_item_before_sending_any(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    with pytest.raises(InvalidInputError, match="put_many item 2: value must be bytes or str, got int"):
        client.put_many([("a", "x"), ("b", "y"), ("c", 5)])
    with pytest.raises(LimitExceededError, match="put_many item 1: value is"):
        client.put_many({"a": "x", "b": b"x" * (client.limits.max_value_bytes + 1)})
    with pytest.raises(InvalidInputError, match="put_many item 0: must be"):
        client.put_many([("a",)])
    with pytest.raises(InvalidInputError, match="mapping or an iterable"):
        client.put_many("ab")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="ttl_ms"):
        client.put_many({"a": "x"}, ttl_ms=-1)
    assert not [call for call in cluster.calls if call[1] in ("put", "put_many")]
    assert client.put_many([]) == 0 and client.get("a") is None


def test_put_many_with_a_shard_without_quorum_stores_the_rest_and_says_how_many(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    shard = cluster.shards["shard-0"]
    cluster.kill(shard.replicas[1])
    cluster.kill(shard.replicas[2])
    items = {f"k{i}": f"v{i}" for i in range(40)}
    elsewhere = [key for key in items if client.shard_for(key) == "shard-1"]
    with pytest.raises(NoQuorumError, match=f"put_many stored {len(elsewhere)} of 40 items; ") as info:
        client.put_many(items)
    assert info.value.shard_id == "shard-0" and info.value.retryable
    assert all(client.get(key) == items[key].encode() for key in elsewhere)
    assert shard.kv.stats()["entries"] == 0


def test_put_many_sends_a_chunk_at_a_time_and_an_embedder_failure_says_how_far_it_got(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("semcache._engine.bulk.BULK_CHUNK", 10)
    failing = HashEmbedding(cluster.embedding.dim)
    encode = failing._encode

    def crash_on_the_third_call(texts: list[str]) -> Any:
        if failing.model_calls >= 3:
            raise RuntimeError("the embedding model crashed")
        return encode(texts)

    failing._encode = crash_on_the_third_call  # type: ignore[method-assign]
    kv = make_client(cluster, embedding=failing)
    items = {f"k{i:02d}": f"value number {i}" for i in range(25)}
    with pytest.raises(RuntimeError, match="crashed") as info:
        kv.put_many(items)
    assert info.value.__notes__ == ["put_many stored 20 of 25 items"]
    assert kv.scan("", 100) == [f"k{i:02d}" for i in range(20)]
    kv.close()


class RefusingNode:
    """A fake node that refuses the key ``bad`` itself, alone (``put`` raises) or in a batch (its item's error)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def put(self, key: str, *args: Any, **kwargs: Any) -> None:
        if key == "bad":
            raise InvalidInputError("the node refused this put")
        self.node.put(key, *args, **kwargs)

    def put_many(self, items: list[Any]) -> list[Any]:
        refused = [item.key == "bad" for item in items]
        outcomes = self.node.put_many([item for item, bad in zip(items, refused, strict=True) if not bad])
        answers = iter(outcomes)
        return [InvalidInputError("the node refused this put") if bad else next(answers) for bad in refused]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


@pytest.mark.parametrize("alone", [True, False], ids=["lone-put", "in-a-batch"])
def test_put_many_counts_what_the_other_shard_stored_when_a_node_refuses_a_put(
    cluster: FakeCluster, alone: bool
) -> None:
    kv = DistributedSemanticKV(
        ["fake://shard-0/0"], connect=lambda address: RefusingNode(cluster.connect(address)),  # type: ignore[arg-type]
        clock=cluster.clock, sleep=cluster.clock.sleep,
    )
    bad_shard = kv.shard_for("bad")
    same = [f"k{i}" for i in range(200) if kv.shard_for(f"k{i}") == bad_shard][: 0 if alone else 3]
    other = [f"k{i}" for i in range(200) if kv.shard_for(f"k{i}") != bad_shard][:5]
    items = {key: f"value of {key}" for key in [*same, "bad", *other]}
    with pytest.raises(InvalidInputError, match=f"put_many stored {len(same) + 5} of {len(items)} items; the node"):
        kv.put_many(items)
    assert all(kv.get(key) == items[key].encode() for key in [*same, *other])  # all written before it raised
    assert kv.get("bad") is None
    kv.close()


def test_put_many_on_a_client_closed_meanwhile_says_closed_and_how_far_it_got(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("semcache._engine.bulk.BULK_CHUNK", 10)
    embedding = HashEmbedding(cluster.embedding.dim)
    kv = make_client(cluster, embedding=embedding)
    encode = embedding._encode

    def close_on_the_second_call(texts: list[str]) -> Any:
        if embedding.model_calls == 2:
            kv.close()
        return encode(texts)

    embedding._encode = close_on_the_second_call  # type: ignore[method-assign]
    with pytest.raises(ClosedError, match="put_many stored 10 of 25 items; "):
        kv.put_many({f"k{i:02d}": f"value number {i}" for i in range(25)})
    assert sum(shard.kv.stats()["entries"] for shard in cluster.shards.values()) == 10


def test_a_shard_with_every_replica_down_is_unavailable(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-1")
    for address in cluster.shards["shard-1"].replicas:
        cluster.kill(address)
    with pytest.raises(ShardUnavailableError) as info:
        client.get(key)
    assert info.value.shard_id == "shard-1"


def test_a_shard_whose_replicas_take_calls_but_time_out_has_no_quorum(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    key = next(f"k{i}" for i in range(100) if client.shard_for(f"k{i}") == "shard-1")
    cluster.shards["shard-1"].slow.update(cluster.shards["shard-1"].replicas)
    with pytest.raises(NoQuorumError, match="shard-1"):
        client.put(key, "v")


def test_search_merges_the_top_k_of_every_shard_like_one_store(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    reference = SemanticKV(embedding=cluster.embedding)
    try:
        for i in range(40):
            text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 4)) + f" w{i}"
            client.put(f"doc:{i}", text)
            reference.put(f"doc:{i}", text)
        for query in ("alpha beta", "sigma tau gamma", "pi rho"):
            got = client.search(query, top_k=7)
            want = reference.search(query, top_k=7)
            truth = {r.key: round(r.similarity, 5) for r in reference.search(query, top_k=40)}
            # Same similarities in the same order; each key carries its true similarity (ties at the
            # cut-off may pick either of the tied keys, as one store would).
            assert [round(r.similarity, 5) for r in got] == [round(r.similarity, 5) for r in want]
            assert all(truth[r.key] == round(r.similarity, 5) for r in got)
            assert len({r.key for r in got}) == 7
            assert got.missing_shards == () and got.complete
            assert {r.node for r in got} <= {"shard-0", "shard-1"}
        assert {r.node for r in client.search("alpha", top_k=40)} == {"shard-0", "shard-1"}
    finally:
        reference.close()


def test_search_with_a_shard_down_returns_the_rest_and_names_the_missing_shard(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    for i in range(30):
        client.put(f"doc:{i}", f"alpha {WORDS[i % len(WORDS)]}")
    on_shard_0 = {f"doc:{i}" for i in range(30) if client.shard_for(f"doc:{i}") == "shard-0"}
    for address in cluster.shards["shard-1"].replicas:
        cluster.kill(address)
    results = client.search("alpha", top_k=30)
    assert isinstance(results, ShardResults)
    assert results.missing_shards == ("shard-1",) and not results.complete
    assert client.last_missing_shards == ("shard-1",)
    assert {r.key for r in results} == on_shard_0
    keys = client.scan("doc:", 100)
    assert set(keys) == on_shard_0 and keys.missing_shards == ("shard-1",)


def test_search_with_every_shard_down_is_an_error(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    for shard in cluster.shards.values():
        for address in shard.replicas:
            cluster.kill(address)
    with pytest.raises(ShardUnavailableError):
        client.search("anything")


def test_scan_merges_sorted_keys_up_to_the_limit(client: DistributedSemanticKV) -> None:
    keys = [f"user:{i:03d}" for i in range(50)]
    for key in reversed(keys):
        client.put(key, b"\xff\xfe binary")  # not searchable, still scanned
    client.put("other", "x")
    assert client.scan("user:", 100) == keys
    assert client.scan("user:", 7) == keys[:7]
    assert client.scan("", 0) == []


def test_scopes_and_vectors_pass_through(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    vector = cluster.embedding.embed_one("alpha beta")
    client.put("a", "x", scope="tenant-a", vector=vector)
    client.put("b", "x", scope="tenant-b", vector=vector)
    assert [r.key for r in client.search(None, scope="tenant-a", vector=vector)] == ["a"]
    assert client.clear_scope("tenant-") == 2
    assert client.search(None, scope="tenant-a", vector=vector) == []


def test_clear_all_clears_every_shard(cluster: FakeCluster, client: DistributedSemanticKV) -> None:
    for i in range(20):
        client.put(f"k{i}", f"v{i}")
    assert client.clear_all() == 20
    assert all(len(s.kv) == 0 for s in cluster.shards.values())


def test_follower_reads_spread_over_replicas(cluster: FakeCluster) -> None:
    kv = make_client(cluster, read_from="any")
    try:
        key = next(f"k{i}" for i in range(100) if kv.shard_for(f"k{i}") == "shard-0")
        kv.put(key, "v")
        for _ in range(6):
            assert kv.get(key) == b"v"
        readers = {a for (a, method), n in cluster.calls.items() if method == "get" and n}
        assert len(readers) == 3  # leader and both followers served reads
    finally:
        kv.close()


def test_cache_runs_unchanged_on_the_cluster_client(client: DistributedSemanticKV) -> None:
    cache = SemanticCache(backend=client, threshold=0.5)
    scope = {"tenant": "acme"}
    cache.store("alpha beta gamma delta", "first", scope=scope)
    hit = cache.lookup("alpha beta gamma delta epsilon", scope=scope)
    assert hit is not None and hit.response == "first" and not hit.exact
    assert cache.lookup("alpha beta gamma delta", scope={"tenant": "other"}) is None


def test_embedding_is_the_clusters_or_refused(cluster: FakeCluster) -> None:
    assert embedding_for_cluster(None, "hash:32:0", 32).model_id == "hash:32:0"
    with pytest.raises(EmbeddingMismatchError):
        make_client(cluster, embedding=HashEmbedding(16))
    with pytest.raises(EmbeddingMismatchError):
        make_client(cluster, embedding=HashEmbedding(32, seed=1))


def test_topology_comes_from_any_reachable_seed(cluster: FakeCluster) -> None:
    kv = DistributedSemanticKV(
        ["fake://nowhere/0", "fake://shard-1/2"], connect=lambda a: cluster.connect(a)  # type: ignore[arg-type]
    )
    try:
        assert kv.shard_ids == ("shard-0", "shard-1")
    finally:
        kv.close()
    with pytest.raises(ShardUnavailableError, match="fake://nowhere/0"):
        DistributedSemanticKV(["fake://nowhere/0"], connect=lambda a: cluster.connect(a))  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "speaks", "advice"), [
    (None, 1, "upgrade the cluster's nodes"),  # a node from before versions: its topology has none
    (WIRE_VERSION - 1, WIRE_VERSION - 1, "upgrade the cluster's nodes"),
    (WIRE_VERSION + 1, WIRE_VERSION + 1, "upgrade the client"),
])
def test_a_cluster_of_another_wire_version_is_refused_at_the_handshake(
    version: int | None, speaks: int, advice: str
) -> None:
    fake = FakeCluster(wire_version=version)
    try:
        with pytest.raises(ConfigurationError) as info:
            make_client(fake)
        assert (f"the client speaks wire version {WIRE_VERSION}, the node at fake://shard-0/0 speaks {speaks}: "
                f"{advice}") in str(info.value)
        assert {method for _, method in fake.calls} <= {"topology", "close"}  # nothing else was sent
    finally:
        fake.close()


def test_a_refused_token_is_not_retried() -> None:
    fake = FakeCluster(token="secret")
    try:
        with pytest.raises(AuthenticationError):
            make_client(fake, token="wrong")
        kv = make_client(fake, token="secret")
        kv.put("k", "v")
        assert kv.get("k") == b"v"
        kv.close()
    finally:
        fake.close()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda kv: kv.put("", "v"), InvalidInputError),
        (lambda kv: kv.put("k" * 2000, "v"), LimitExceededError),
        (lambda kv: kv.put("k", "v" * (48 * 1024 + 1)), LimitExceededError),
        (lambda kv: kv.put("k", 12), InvalidInputError),
        (lambda kv: kv.put("k", "v", ttl_ms=-1), InvalidInputError),
        (lambda kv: kv.put("k", "v", vector=np.zeros(32, dtype=np.float32)), InvalidInputError),
        (lambda kv: kv.put("k", "v", vector=np.ones(5, dtype=np.float32)), InvalidInputError),
        (lambda kv: kv.search("q", top_k=0), InvalidInputError),
        (lambda kv: kv.search("q", threshold=2.0), InvalidInputError),
        (lambda kv: kv.search(None), InvalidInputError),
        (lambda kv: kv.scan(b"x"), InvalidInputError),
        (lambda kv: kv.get(7), InvalidInputError),
        (lambda kv: kv.clear_scope(""), InvalidInputError),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    cluster: FakeCluster, client: DistributedSemanticKV, call: object, error: type[Exception]
) -> None:
    client.put("kept", "safe")
    sent = sum(n for (_, method), n in cluster.calls.items() if method != "topology")
    with pytest.raises(error):
        call(client)  # type: ignore[operator]
    assert sum(n for (_, method), n in cluster.calls.items() if method != "topology") == sent
    assert client.get("kept") == b"safe"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"read_from": "nearest"},
        {"connection_timeout": 0},
        {"search_timeout": -1},
        {"max_workers": 0},
        {"request_timeout": True},
    ],
)
def test_bad_settings_are_configuration_errors(cluster: FakeCluster, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        make_client(cluster, **kwargs)


def test_no_nodes_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        DistributedSemanticKV([])


@pytest.mark.parametrize("nodes", [["127.0.0.1:1"], "localhost:8815", ["grpc://127.0.0.1:1", "127.0.0.1:2"]])
def test_a_node_address_without_a_scheme_asks_for_grpc(nodes: list[str] | str) -> None:
    bare = next(n for n in ([nodes] if isinstance(nodes, str) else nodes) if "://" not in n)
    connected: list[str] = []
    with pytest.raises(ConfigurationError, match=f"has no scheme: write 'grpc://{bare}'"):
        DistributedSemanticKV(nodes, connect=connected.append)  # type: ignore[arg-type]
    assert connected == []  # refused before any connection


def test_use_after_close_is_a_closed_error(cluster: FakeCluster) -> None:
    kv = make_client(cluster)
    kv.put("k", "v")
    kv.close()
    kv.close()  # idempotent
    with pytest.raises(ClosedError):
        kv.get("k")
    with pytest.raises(ClosedError):
        kv.search("k")
    assert any(method == "close" for (_, method) in cluster.calls)


def test_health_check_and_cluster_stats_report_leaders_and_down_replicas(
    cluster: FakeCluster, client: DistributedSemanticKV
) -> None:
    assert client.health_check()["healthy"] is True
    cluster.kill(cluster.shards["shard-1"].replicas[0])  # the leader, with no successor yet
    report = client.health_check()
    assert report["healthy"] is False
    assert report["shards"]["shard-1"] == {"leader": None, "replicas_up": 2, "replicas": 3}
    stats = client.cluster_stats()
    assert "error" in stats["shard-1"]["shard-1-r0"]
    assert stats["shard-0"]["shard-0-r0"]["role"] == "leader"
    totals = client.stats()
    assert totals["missing_shards"] == ["shard-1"]
    assert totals["entries"] == len(cluster.shards["shard-0"].kv)
