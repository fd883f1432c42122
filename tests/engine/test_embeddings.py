"""Embedding providers: validation, LRU memo, micro-batching, callables and the OpenAI client."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from openai import APIStatusError, OpenAI
from support.wait import wait_until

from semcache import EmbeddingMismatchError, InvalidInputError, SemanticKV
from semcache._engine.state import ShardState
from semcache.embeddings import (
    CallableEmbedding,
    Embedding,
    HashEmbedding,
    OpenAIEmbedding,
    as_embedding,
    unit_vector,
    validate_vectors,
)
from semcache.testing import FakeOpenAIServer, fake_embedding


class Recorder:
    """A model that records each batch it is called with; optionally blocks its first call."""

    def __init__(self, dim: int = 8, block_first: bool = False) -> None:
        self.dim = dim
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        if not block_first:
            self.release.set()

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(text)) % 2**32)
        return rng.normal(size=self.dim).astype(np.float32) + 0.01

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        assert self.release.wait(timeout=60), "test never released the model"
        return np.stack([self.vector(t) for t in texts])


# ------------------------------------------------------------------ validation


def test_validate_vectors_normalises_and_checks():
    out = validate_vectors([[3.0, 4.0]], 2)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.allclose(out, [[0.6, 0.8]])
    assert validate_vectors([1.0, 1.0], 2).shape == (1, 2)
    for bad, message in [
        ([[1.0, 2.0, 3.0]], "dimension 3, expected 2"),
        ([[np.nan, 1.0]], "NaN or inf"),
        ([[np.inf, 1.0]], "NaN or inf"),
        ([[0.0, 0.0]], "zero vector"),
        ([[[1.0, 2.0]]], "1-D or 2-D"),
        ("text", "not a numeric array"),
        ([[1.0], [1.0, 2.0]], "not a numeric array"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            validate_vectors(bad, 2)


def test_unit_vector_passes_a_unit_vector_through_and_checks_anything_else():
    unit = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    assert unit_vector(unit, 3) is unit  # already one: no copy, no normalising
    scaled = unit_vector(np.array([3.0, 4.0, 0.0]), 3)  # float64, not unit: converted and normalised
    assert scaled.dtype == np.float32 and np.allclose(scaled, unit)
    almost = np.array([0.6, 0.8, 0.001], dtype=np.float32)  # |norm² - 1| = 1e-6: within the tolerance
    assert unit_vector(almost, 3) is almost
    off = np.array([0.6, 0.8, 0.1], dtype=np.float32)  # 1% too long: normalised
    assert unit_vector(off, 3) is not off and abs(float(np.linalg.norm(unit_vector(off, 3))) - 1) < 1e-6
    strided = np.array([[0.6, 9.0], [0.8, 9.0], [0.0, 9.0]], dtype=np.float32)[:, 0]  # a unit view, not contiguous
    assert unit_vector(strided, 3).flags.c_contiguous
    for bad, message in [
        (np.array([np.nan, 1.0, 0.0], dtype=np.float32), "NaN or inf"),
        (np.array([np.inf, 0.0, 0.0], dtype=np.float32), "NaN or inf"),
        (np.zeros(3, dtype=np.float32), "zero vector"),
        (np.array([0.6, 0.8], dtype=np.float32), "dimension 2, expected 3"),
        (np.ones((2, 3), dtype=np.float32), "one embedding, got 2 rows"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            unit_vector(bad, 3)


# -------------------------------------------------------------------- hashing


def test_hash_embedding_is_deterministic_and_unit_length():
    texts = ["hello world", "Hello, WORLD!", "something else entirely", ""]
    first, second = HashEmbedding(dim=64).embed(texts), HashEmbedding(dim=64).embed(texts)
    assert np.array_equal(first, second)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    assert np.allclose(first[0], first[1])  # case and punctuation do not matter
    assert float(first[0] @ first[2]) < 0.5
    other = HashEmbedding(dim=64, seed=1)
    assert other.model_id != HashEmbedding(dim=64).model_id
    assert not np.allclose(other.embed(texts[:1]), first[:1])


# ----------------------------------------------------------------------- memo


def test_memo_skips_recent_texts_and_forgets_least_recent():
    model = Recorder()
    emb = CallableEmbedding(model, dim=8, memo_size=2)
    emb.embed_one("a")
    emb.embed_one("b")
    emb.embed_one("a")  # hit; "a" becomes most recent
    emb.embed_one("c")  # evicts "b"
    assert (emb.model_calls, emb.memo_hits) == (3, 1)
    emb.embed_one("a")
    assert (emb.model_calls, emb.memo_hits) == (3, 2)
    emb.embed_one("b")
    assert emb.model_calls == 4
    assert [batch for batch in model.batches] == [["a"], ["b"], ["c"], ["b"]]


def test_batch_embed_uses_the_memo_and_sends_each_text_once():
    model = Recorder()
    emb = CallableEmbedding(model, dim=8)
    emb.embed_one("cached")
    vectors = emb.embed(["x", "cached", "x", "y"])
    assert model.batches[-1] == ["x", "y"]
    assert np.array_equal(vectors[0], vectors[2])
    assert np.allclose(vectors[1], emb.embed_one("cached"))


def test_memo_size_zero_disables_the_memo():
    emb = CallableEmbedding(Recorder(), dim=8, memo_size=0)
    for _ in range(3):
        emb.embed_one("same")
    assert (emb.model_calls, emb.memo_hits) == (3, 0)


# -------------------------------------------------------------- micro-batching


def run_threads(emb: CallableEmbedding, texts: Sequence[str], model: Recorder) -> dict[str, np.ndarray]:
    """Call embed_one from one thread per text while the first model call is held open."""
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(text: str) -> None:
        try:
            results[text] = emb.embed_one(text)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in texts]
    threads[0].start()
    wait_until(lambda: len(model.batches) == 1)  # the first caller is inside the model
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(emb._batcher._pending) == len(texts) - 1)  # everyone else queued
    model.release.set()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_concurrent_single_calls_are_micro_batched():
    model = Recorder(block_first=True)
    emb = CallableEmbedding(model, dim=8)
    texts = [f"text {i}" for i in range(24)]
    results = run_threads(emb, texts, model)
    # One call for the first text, one for the 23 that queued while it ran.
    assert emb.model_calls == 2 < len(texts)
    assert [len(batch) for batch in model.batches] == [1, 23]
    for text in texts:  # every caller got its own text's vector
        assert np.allclose(results[text], validate_vectors(model.vector(text), 8)[0])


def test_micro_batches_respect_max_batch():
    model = Recorder(block_first=True)
    emb = CallableEmbedding(model, dim=8, max_batch=5)
    run_threads(emb, [f"t{i}" for i in range(21)], model)
    assert [len(batch) for batch in model.batches] == [1, 5, 5, 5, 5]


def test_a_failing_batch_fails_every_waiter_and_the_next_call_works():
    calls = {"n": 0}

    def flaky(texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model crashed")
        return np.ones((len(texts), 4))

    emb = CallableEmbedding(flaky, dim=4)
    with pytest.raises(RuntimeError, match="model crashed"):
        emb.embed_one("first")
    assert emb.embed_one("first").shape == (4,)


# ------------------------------------------------------------------ callables


def test_a_plain_callable_is_an_embedder():
    def my_model(texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0, 0.5] for t in texts]

    emb = as_embedding(my_model)
    assert isinstance(emb, CallableEmbedding) and emb.dim == 3
    assert emb.model_id == "callable:test_a_plain_callable_is_an_embedder.<locals>.my_model"
    with SemanticKV(embedding=my_model) as kv:
        kv.put("short", "ab")
        kv.put("long", "abcdefghijklmnopqrstuvwxyz")
        assert kv.search("abcdefghijklmnopqrstuvwxy", top_k=1)[0].key == "long"


def test_an_embedding_protocol_object_keeps_its_identity():
    class Mine:
        dim = 4
        model_id = "mine-v1"

        def embed(self, texts: Sequence[str]) -> Any:
            return np.ones((len(texts), 4))

    assert isinstance(Mine(), Embedding)
    emb = as_embedding(Mine())
    assert (emb.model_id, emb.dim) == ("mine-v1", 4)
    assert np.allclose(emb.embed_one("x"), 0.5)


def test_a_snapshot_refuses_another_model(tmp_path):
    state = ShardState(dim=8, model_id="model-a")
    state.snapshot(tmp_path)
    with pytest.raises(EmbeddingMismatchError, match="built with model-a .dim 8.; it cannot be opened with model-b"):
        ShardState.restore(tmp_path, model_id="model-b", dim=8)
    with pytest.raises(EmbeddingMismatchError):
        ShardState.restore(tmp_path, model_id="model-a", dim=16)
    assert ShardState.restore(tmp_path, model_id="model-a", dim=8).model_id == "model-a"


# --------------------------------------------------------------------- OpenAI


@pytest.fixture
def openai_server():
    with FakeOpenAIServer() as server:
        yield server


def client_for(server: FakeOpenAIServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)


def test_openai_embedding_through_the_real_client(openai_server):
    emb = OpenAIEmbedding("text-embedding-3-small", client=client_for(openai_server))
    assert (emb.dim, emb.model_id) == (1536, "openai:text-embedding-3-small")
    assert openai_server.count("embeddings") == 0  # a known model's dimension needs no probe
    vectors = emb.embed(["the cat sat", "a dog ran"])
    assert np.allclose(vectors[0], fake_embedding("the cat sat", 1536), atol=1e-6)
    assert np.allclose(vectors[1], fake_embedding("a dog ran", 1536), atol=1e-6)
    assert openai_server.count("embeddings") == 1  # one request for the batch
    emb.embed_one("the cat sat")  # memo hit
    assert openai_server.count("embeddings") == 1


def test_openai_embedding_with_dimensions_and_a_probed_model(openai_server):
    short = OpenAIEmbedding("text-embedding-3-small", client=client_for(openai_server), dimensions=64)
    assert (short.dim, short.model_id) == (64, "openai:text-embedding-3-small:64")
    assert short.embed(["x y"]).shape == (1, 64)
    assert openai_server.requests[-1]["dimensions"] == 64
    custom = OpenAIEmbedding("my-embedder", client=client_for(openai_server))
    assert custom.dim == 1536 and openai_server.count("embeddings", model="my-embedder") == 1


def test_openai_embedding_builds_its_client_from_base_url(openai_server):
    emb = OpenAIEmbedding("text-embedding-3-small", base_url=openai_server.base_url, api_key="k", dimensions=32)
    with SemanticKV(embedding=emb) as kv:
        kv.put("cats", "cats purr and sleep all day")
        kv.put("cars", "cars need fuel and tyres")
        assert kv.search("why do cats sleep all day", top_k=1)[0].key == "cats"
    assert openai_server.count("embeddings") >= 2


def test_openai_micro_batching_sends_fewer_requests_than_texts():
    # Each request takes 0.3 s on the server, so callers arriving meanwhile share the next one.
    with FakeOpenAIServer(latency=0.3) as server:
        emb = OpenAIEmbedding("text-embedding-3-small", client=client_for(server), dimensions=16)
        barrier = threading.Barrier(12)

        def worker(i: int) -> None:
            barrier.wait(timeout=60)
            emb.embed_one(f"question number {i}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert emb.model_calls == server.count("embeddings") < 12


def test_an_openai_failure_stores_nothing(openai_server):
    emb = OpenAIEmbedding("text-embedding-3-small", client=client_for(openai_server), dimensions=16)
    with SemanticKV(embedding=emb) as kv:
        kv.put("kept", "kept value")
        openai_server.fail_next(500)
        with pytest.raises(APIStatusError):
            kv.put("lost", "this write fails upstream")
        assert kv.get("lost") is None and kv.get("kept") == b"kept value" and len(kv) == 1
        kv.put("lost", "this write fails upstream")  # the failure was not memoised
        assert kv.get("lost") == b"this write fails upstream"


def test_editing_a_returned_vector_does_not_corrupt_the_memo():
    emb = HashEmbedding(dim=16)
    first = emb.embed_one("some text")
    expected = first.copy()
    first[:] = 0.0  # a caller scaling or reusing its array in place
    again = emb.embed_one("some text")
    assert emb.memo_hits == 1 and np.array_equal(again, expected)


def test_openai_embedding_without_credentials_is_a_configuration_error(monkeypatch):
    from semcache import ConfigurationError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="cannot build an OpenAI client"):
        OpenAIEmbedding("text-embedding-3-small", base_url="http://127.0.0.1:9/v1")
