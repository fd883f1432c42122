"""One contract for the backend interface, run on every backend.

:class:`BackendContract` states what :class:`semcache._engine.backend.Backend` (plus the
seed's extras: exists, scan, string/JSON helpers) promises; each subclass
supplies a backend: the embedded ``SemanticKV``, ``DistributedSemanticKV`` on
in-process fake nodes, and ``DistributedSemanticKV`` on a real 2 × 3 cluster of
node processes.  The same assertions pass on all three.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.fake_nodes import FakeCluster
from support.harness import ClusterHarness, wait_until

from semcache import SemanticCache, SemanticKV
from semcache._engine.backend import Backend, SearchResult
from semcache.cluster._client import DistributedSemanticKV
from semcache.embeddings import HashEmbedding
from semcache.errors import InvalidInputError

DIM = 64


class BackendContract:
    """Subclasses provide a ``backend`` fixture: an empty store embedding with ``HashEmbedding(64)``."""

    def test_is_a_backend(self, backend: Any) -> None:
        assert isinstance(backend, Backend)
        assert backend.embedding.dim == DIM

    def test_put_get_delete_exists(self, backend: Any) -> None:
        assert backend.put("a", "alpha value") is True
        assert backend.put("b", b"\x00\xff binary") is True
        assert backend.get("a") == b"alpha value" and backend.get("b") == b"\x00\xff binary"
        assert backend.get("missing") is None
        assert backend.exists("a") and not backend.exists("missing")
        assert backend.delete("a") is True and backend.delete("a") is False
        assert backend.get("a") is None and not backend.exists("a")

    def test_overwrite_replaces_value_and_vector(self, backend: Any) -> None:
        backend.put("k", "alpha beta gamma")
        backend.put("k", "delta epsilon zeta")
        assert backend.get("k") == b"delta epsilon zeta"
        hits = backend.search("delta epsilon zeta", top_k=5)
        assert [h.key for h in hits] == ["k"] and hits[0].similarity > 0.99
        assert all(h.similarity < 0.99 for h in backend.search("alpha beta gamma", top_k=5))

    def test_put_many_stores_like_put_and_refuses_a_bad_item_whole(self, backend: Any) -> None:
        # 71 items (more than one batch of 64), of which at most 32 are searchable: an HNSW graph of up to
        # 2*M+1 entries keeps every link, so the search below is exact on any hnswlib build.
        texts = [(f"m:{i}", f"many value {i}") for i in range(30)]
        unsearchable = [(f"m:raw{i}", bytes([0xFF, i])) for i in range(40)]  # not UTF-8, no text: stored only
        items = texts + unsearchable + [("m:bin", b"\x00\xff", "binary with a text")]
        assert backend.put_many(items, scope="bulk") == 71
        assert backend.get("m:22") == b"many value 22" and backend.get("m:bin") == b"\x00\xff"
        assert backend.get("m:raw7") == bytes([0xFF, 7])
        assert [h.key for h in backend.search("binary with a text", top_k=1, scope="bulk")] == ["m:bin"]
        assert backend.search("many value 22", top_k=1) == []  # the default scope holds none of them
        with pytest.raises(InvalidInputError, match="put_many item 1"):
            backend.put_many({"m:ok": "fine", "": "an empty key"})
        assert backend.get("m:ok") is None and backend.put_many([]) == 0

    def test_scan_is_sorted_and_limited(self, backend: Any) -> None:
        for key in ("user:3", "user:1", "user:2", "other:1"):
            backend.put(key, f"value of {key}")
        assert backend.scan("user:", 10) == ["user:1", "user:2", "user:3"]
        assert backend.scan("user:", 2) == ["user:1", "user:2"]
        assert backend.scan("", 100) == ["other:1", "user:1", "user:2", "user:3"]

    def test_search_results_unpack_as_the_seed_did(self, backend: Any) -> None:
        for i, text in enumerate(["alpha beta", "alpha gamma", "delta epsilon", "zeta eta theta"]):
            backend.put(f"doc:{i}", text)
        hits = backend.search("alpha beta", top_k=2)
        assert len(hits) == 2 and all(isinstance(h, SearchResult) for h in hits)
        key, value, similarity, node = hits[0]
        assert (key, value) == ("doc:0", b"alpha beta") and similarity > 0.99 and isinstance(node, str)
        assert hits[0].similarity >= hits[1].similarity
        assert backend.search("alpha beta", top_k=10, threshold=0.99) == [hits[0]]

    def test_text_and_vector_arguments(self, backend: Any) -> None:
        backend.put("t", b"\x00\x01 opaque payload", text="searchable words here")
        assert [h.key for h in backend.search("searchable words here", top_k=1)] == ["t"]
        assert backend.get("t") == b"\x00\x01 opaque payload"
        vector = np.zeros(DIM, dtype=np.float32)
        vector[3] = 1.0
        backend.put("v", "ignored text", vector=vector)
        hits = backend.search(None, top_k=1, vector=vector)
        assert hits[0].key == "v" and hits[0].similarity > 0.99

    def test_binary_values_are_stored_but_not_searchable(self, backend: Any) -> None:
        backend.put("bin", b"\xff\xfe\xfd")
        assert backend.get("bin") == b"\xff\xfe\xfd"
        assert all(h.key != "bin" for h in backend.search("anything at all", top_k=10))

    def test_scopes_are_hard_partitions(self, backend: Any) -> None:
        backend.put("a1", "same words", scope="tenant-a")
        backend.put("b1", "same words", scope="tenant-b")
        backend.put("shared", "same words")
        assert [h.key for h in backend.search("same words", scope="tenant-a")] == ["a1"]
        assert [h.key for h in backend.search("same words")] == ["shared"]
        assert backend.clear_scope("tenant-") == 2
        assert backend.search("same words", scope="tenant-b") == []
        assert backend.get("shared") == b"same words"

    def test_clear_all(self, backend: Any) -> None:
        for i in range(10):
            backend.put(f"k{i}", f"value {i}")
        assert backend.clear_all() == 10
        assert backend.scan("", 100) == [] and backend.get("k1") is None

    def test_ttl_expires_entries(self, backend: Any) -> None:
        backend.put("short", "short lived words", ttl_ms=300)
        backend.put("long", "long lived words")
        assert wait_until(lambda: backend.get("short") is None, 10, interval=0.05)
        assert all(h.key != "short" for h in backend.search("short lived words", top_k=5))
        assert backend.get("long") == b"long lived words"

    def test_string_and_json_helpers(self, backend: Any) -> None:
        backend.put_string("s", "héllo")
        backend.put_json("j", {"b": [1, 2], "a": None})
        assert backend.get_string("s") == "héllo" and backend.get_json("j") == {"a": None, "b": [1, 2]}
        assert backend.get_string("missing") is None and backend.get_json("missing") is None

    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.put("", "v"),
            lambda b: b.put("k", 3.5),
            lambda b: b.put("k", "v", ttl_ms=-5),
            lambda b: b.put("k", "v", vector=np.ones(DIM + 1, dtype=np.float32)),
            lambda b: b.search("q", top_k=0),
            lambda b: b.search("q", threshold=float("nan")),
            lambda b: b.search(None),
            lambda b: b.scan("", -1),
            lambda b: b.clear_scope(""),
        ],
    )
    def test_bad_input_is_refused_and_loses_nothing(self, backend: Any, call: Any) -> None:
        backend.put("kept", "safe words")
        with pytest.raises(InvalidInputError):
            call(backend)
        assert backend.get("kept") == b"safe words"

    def test_semantic_cache_on_top(self, backend: Any) -> None:
        cache = SemanticCache(backend=backend, threshold=0.9)
        cache.store("alpha beta gamma delta", {"answer": 42}, scope="t")
        exact = cache.lookup("alpha beta gamma delta", scope="t")
        assert exact is not None and exact.exact and exact.response == {"answer": 42}
        assert cache.lookup("alpha beta gamma delta", scope="other") is None

    def test_stats_count_entries(self, backend: Any) -> None:
        for i in range(3):
            backend.put(f"k{i}", f"v{i}")
        assert backend.stats()["entries"] == 3


class TestEmbedded(BackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[SemanticKV]:
        with SemanticKV(embedding=HashEmbedding(DIM), purge_interval=0.05) as kv:
            yield kv


class TestClientOnFakeNodes(BackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[DistributedSemanticKV]:
        fake = FakeCluster(shards=2, replicas=3, dim=DIM)
        kv = DistributedSemanticKV(["fake://shard-0/0"], connect=fake.connect)  # type: ignore[arg-type]
        try:
            yield kv
        finally:
            kv.close()
            fake.close()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path_factory.mktemp("contract"), shards=2, replicas=3, embedding=f"hash:{DIM}") as c:
        yield c


@pytest.mark.slow
@pytest.mark.timeout(300)
class TestClientOnARealCluster(BackendContract):
    @pytest.fixture
    def backend(self, real_cluster: ClusterHarness) -> DistributedSemanticKV:
        kv = real_cluster.client()
        kv.clear_all()
        return kv
