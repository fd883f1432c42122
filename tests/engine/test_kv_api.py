"""SemanticKV's seed API in detail: what each call returns, and what stats() counts."""

from __future__ import annotations

import numpy as np
import pytest
from support.clocks import Clock

from semcache import Limits, SemanticKV
from semcache.embeddings import HashEmbedding
from semcache.errors import ClosedError, InvalidInputError, LimitExceededError


@pytest.fixture
def kv():
    with SemanticKV(embedding=HashEmbedding(dim=64), node_id="node-7") as store:
        yield store


def test_search_results_unpack_as_in_the_seed(kv):
    kv.put("doc:api", "REST API endpoints and authentication")
    kv.put("doc:db", "database schema and migrations")
    results = kv.search("API authentication", top_k=5)
    key, value, similarity, node = results[0]
    assert (key, value, node) == ("doc:api", b"REST API endpoints and authentication", "node-7")
    assert 0.0 < similarity <= 1.0
    assert [r.key for r in results] == ["doc:api", "doc:db"]  # top_k beyond the entries returns them all
    sims = [r.similarity for r in results]
    assert sims == sorted(sims, reverse=True)


def test_threshold_filters_results(kv):
    kv.put("a", "alpha beta gamma")
    kv.put("b", "completely different words")
    assert [r.key for r in kv.search("alpha beta gamma", top_k=5, threshold=0.9)] == ["a"]
    assert kv.search("nothing in common here", top_k=5, threshold=0.99) == []


def test_text_is_what_gets_embedded_and_binary_values_are_not_searchable(kv):
    kv.put("img", b"\x89PNG\r\n\x1a\n\x00\xff", text="a photo of a cat")
    kv.put("raw", b"\xff\xfe\xfd")  # not UTF-8, no text: stored, not searchable
    assert kv.get("raw") == b"\xff\xfe\xfd"
    assert [r.key for r in kv.search("photo of a cat", top_k=5)] == ["img"]
    stats = kv.stats()
    assert (stats["entries"], stats["searchable"]) == (2, 1)


def test_a_precomputed_vector_is_used_as_given(kv):
    vector = np.zeros(64, dtype=np.float32)
    vector[3] = 2.0
    kv.put("v", "text that is not embedded", vector=vector)
    (hit,) = kv.search(None, top_k=1, vector=vector)
    assert hit.key == "v" and hit.similarity == pytest.approx(1.0)


def test_overwriting_moves_a_key_between_scopes(kv):
    kv.put("k", "shared words here", scope="s1")
    kv.put("k", "shared words here", scope="s2")
    assert kv.search("shared words here", scope="s1") == []
    assert [r.key for r in kv.search("shared words here", scope="s2")] == ["k"]


def test_stats_count_operations(kv):
    kv.put("a", "one")
    kv.put("b", "two")
    kv.get("a")
    kv.get("missing")
    kv.delete("b")
    kv.search("one", top_k=1)
    kv.search("zzz qqq", top_k=1, threshold=0.99)
    stats = kv.stats()
    expected = {"puts": 2, "gets": 2, "get_hits": 1, "deletes": 1, "searches": 2, "search_hits": 1}
    assert {name: stats[name] for name in expected} == expected
    assert stats["node"] == "node-7" and stats["model_id"] == "hash:64:0" and stats["dim"] == 64
    assert stats["path"] is None and stats["eviction"] == "lru" and stats["capacity"] is None
    assert stats["value_bytes"] == 3 and stats["applied"] == 3
    assert stats["embedding_model_calls"] >= 2


def test_properties_len_and_repr(kv):
    kv.put("a", "one")
    assert len(kv) == 1
    assert kv.model_id == "hash:64:0" and kv.embedding.dim == 64
    assert kv.limits == Limits()
    assert repr(kv) == "SemanticKV(memory, entries=1, model=hash:64:0)"


def test_clear_scope_and_clear_all_report_counts(kv):
    for i in range(3):
        kv.put(f"a{i}", f"alpha {i}", scope="tenant-a")
    kv.put("b", "beta", scope="tenant-b")
    kv.put("plain", "no scope")
    assert kv.clear_scope("tenant-a") == 3
    assert kv.scan("", 10) == ["b", "plain"]
    assert kv.clear_all() == 2 and len(kv) == 0
    assert kv.stats()["scopes"] == 0


def test_set_ef_search_changes_search_effort_only(tmp_path) -> None:
    from semcache.errors import ClosedError, ConfigurationError

    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1)[:, None]
    kv = SemanticKV(embedding=HashEmbedding(dim=16))
    for i, vector in enumerate(vectors):
        kv.put(f"k{i}", b"v", vector=vector)
    def graphs(name: str) -> dict[str, bytes]:
        kv._state.snapshot(tmp_path / name)
        return {f.name: f.read_bytes() for f in sorted((tmp_path / name).glob("index-*.bin"))}

    before = graphs("before")
    kv.set_ef_search(200)
    assert kv.stats()["ef_search"] == 200
    assert all(kv.search(None, top_k=1, vector=v)[0].key == f"k{i}" for i, v in enumerate(vectors))
    assert graphs("after") == before and before  # the graph is untouched
    for bad in (0, -1, 2.5, True, "64"):
        with pytest.raises(ConfigurationError, match="ef_search"):
            kv.set_ef_search(bad)  # type: ignore[arg-type]
    assert kv.stats()["ef_search"] == 200
    kv.close()
    with pytest.raises(ClosedError):
        kv.set_ef_search(64)


def test_put_many_stores_every_item_embedding_its_text_in_batches(tmp_path):
    clock = Clock()
    items = [(f"q:{i}", f"answer {i}", f"question {i} about {'abcdefghij'[i % 10]}") for i in range(100)]
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=64), clock=clock, capacity=1000) as kv:
        model_calls = kv.embedding.model_calls
        assert kv.put_many([*items, ("img", b"\x89PNG\xff", None), ("raw", b"\xff\xfe")], ttl_ms=5_000) == 102
        assert kv.embedding.model_calls - model_calls == 2  # 100 texts, 64 per model call
        assert kv.put_many({"doc:a": "alpha beta gamma"}, scope="docs") == 1
        assert kv.get("q:42") == b"answer 42" and kv.get("raw") == b"\xff\xfe"
        assert kv.search("question 42 about c", top_k=1)[0].key == "q:42"  # the text, not the value, was embedded
        assert kv.stats()["searchable"] == 101  # binary values without a text are stored, not searchable
        assert [r.key for r in kv.search("alpha beta gamma", scope="docs")] == ["doc:a"]
        assert kv.search("alpha beta gamma", top_k=1)[0].key != "doc:a"  # the scope is a partition
        clock.advance(5_000)
        assert kv.get("q:42") is None and kv.get("doc:a") == b"alpha beta gamma"  # ttl_ms applies to each item
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=64), clock=clock) as reopened:
        assert reopened.get("doc:a") == b"alpha beta gamma"  # logged like any put
        assert not reopened.exists("q:1") and not reopened.exists("raw")  # and its expiry with it


def test_put_many_refuses_a_bad_item_and_stores_none_of_the_call(kv):
    kv.put("kept", "already stored")
    with pytest.raises(InvalidInputError, match=r"put_many item 1: key must be str, got int"):
        kv.put_many([("a", "fine"), (7, "a key that is not a str"), ("c", "fine")])
    with pytest.raises(LimitExceededError, match="put_many item 0: value is"):
        kv.put_many({"big": b"x" * (kv.limits.max_value_bytes + 1)})
    with pytest.raises(InvalidInputError, match="put_many item 0: text must be str"):
        kv.put_many([("a", "fine", b"bytes text")])
    with pytest.raises(InvalidInputError, match="put_many needs a mapping"):
        kv.put_many(42)
    assert kv.scan("", 10) == ["kept"] and kv.put_many([]) == 0


class FailingEmbedding(HashEmbedding):
    """A HashEmbedding whose model fails from its ``fail_at``-th call on."""

    def __init__(self, fail_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at

    def _encode(self, texts):
        if self.model_calls >= self.fail_at:  # model_calls counts this call already
            raise RuntimeError("the embedding model crashed")
        return super()._encode(texts)


def test_put_many_embeds_and_stores_a_chunk_at_a_time_and_says_how_far_it_got(monkeypatch):
    monkeypatch.setattr("semcache._engine.bulk.BULK_CHUNK", 10)
    with SemanticKV(embedding=FailingEmbedding(fail_at=3, dim=64)) as kv:
        items = {f"k{i:02d}": f"value number {i}" for i in range(25)}
        with pytest.raises(RuntimeError, match="crashed") as info:
            kv.put_many(items)
        assert info.value.__notes__ == ["put_many stored 20 of 25 items"]
        assert kv.scan("", 100) == [f"k{i:02d}" for i in range(20)]  # the first two chunks, whole


def test_put_many_refuses_a_text_too_long_to_embed_before_storing_any(kv):
    with pytest.raises(InvalidInputError, match="put_many item 1: text to embed is 40000 characters"):
        kv.put_many([("a", "fine"), ("b", "fine", "x" * 40_000)])
    assert kv.scan("", 10) == []


def test_put_many_on_a_store_closed_meanwhile_says_closed_and_how_far_it_got(monkeypatch):
    monkeypatch.setattr("semcache._engine.bulk.BULK_CHUNK", 10)
    embedding = HashEmbedding(dim=64)
    kv = SemanticKV(embedding=embedding)
    encode = embedding._encode

    def close_on_the_second_call(texts):
        if embedding.model_calls == 2:
            kv.close()
        return encode(texts)

    embedding._encode = close_on_the_second_call
    with pytest.raises(ClosedError, match="put_many stored 10 of 25 items; "):
        kv.put_many({f"k{i:02d}": f"value number {i}" for i in range(25)})
    assert kv._state.stats()["entries"] == 10


def test_put_many_stores_precomputed_vectors_checked_before_anything_is_stored():

    embedding = HashEmbedding(dim=16)
    with SemanticKV(embedding=embedding) as kv:
        vector = embedding.embed(["some words"])[0]
        calls = embedding.model_calls
        assert kv.put_many([("v:1", b"value one", vector * 3.0), ("t:1", "embedded text")]) == 2
        assert embedding.model_calls == calls + 1  # only the text was embedded
        assert kv.search(None, top_k=1, vector=vector)[0].key == "v:1"
        with pytest.raises(InvalidInputError, match="put_many item 1: .*dimension 3, expected 16"):
            kv.put_many([("v:2", b"ok", vector), ("v:3", b"bad", np.ones(3, dtype=np.float32))])
        assert kv.get("v:2") is None  # nothing of the call was stored
