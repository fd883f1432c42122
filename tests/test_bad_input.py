"""Every bad input gets a clear error from semcache.errors, and nothing already stored is lost."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from semcache import (
    ClosedError,
    ConfigurationError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    Limits,
    SemanticCache,
    SemanticKV,
    SemcacheError,
)
from semcache._engine.commands import Clear, Delete, Evict, Expire, Put
from semcache._engine.inputs import MAX_TTL_MS
from semcache._engine.state import ShardState
from semcache.embeddings import CallableEmbedding, HashEmbedding

DIM = 16
SEEDED = {"alpha": "first stored text", "beta": "second stored text", "gamma": "third one"}


@pytest.fixture
def kv() -> Iterator[SemanticKV]:
    with SemanticKV(embedding=HashEmbedding(dim=DIM)) as store:
        for key, value in SEEDED.items():
            store.put(key, value)
        store.put("scoped", "in a scope", scope="tenant")
        yield store


def assert_intact(store: SemanticKV, digest: str) -> None:
    """Nothing changed: same bytes, every seeded value readable and searchable."""
    assert store.digest() == digest
    for key, value in SEEDED.items():
        assert store.get(key) == value.encode()
    assert store.search("second stored text", top_k=1)[0].key == "beta"


def vec(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


GOOD = np.ones(DIM, dtype=np.float32)

# (call, error class, text the message must contain)
KV_CASES: list[tuple[str, Callable[[SemanticKV], Any], type[Exception], str]] = [
    ("key-type", lambda s: s.put(123, "v"), InvalidInputError, "key must be str"),
    ("key-none", lambda s: s.put(None, "v"), InvalidInputError, "key must be str"),
    ("key-empty", lambda s: s.put("", "v"), InvalidInputError, "must not be empty"),
    ("key-size", lambda s: s.put("k" * 1025, "v"), LimitExceededError, "key is 1025 bytes, over the limit of 1024"),
    ("key-size-utf8", lambda s: s.put("é" * 513, "v"), LimitExceededError, "key is 1026 bytes"),
    ("key-surrogate", lambda s: s.put("\ud800", "v"), InvalidInputError, "key is not valid Unicode"),
    ("value-type", lambda s: s.put("k", 123), InvalidInputError, "value must be bytes or str"),
    ("value-none", lambda s: s.put("k", None), InvalidInputError, "value must be bytes or str"),
    ("value-size", lambda s: s.put("k", b"x" * ((1 << 20) + 1)), LimitExceededError, "value is 1048577 bytes"),
    ("value-surrogate", lambda s: s.put("k", "a\udc00"), InvalidInputError, "value is not valid Unicode"),
    ("ttl-negative", lambda s: s.put("k", "v", -1), InvalidInputError, "ttl_ms must be an int >= 0"),
    ("ttl-float", lambda s: s.put("k", "v", 1.5), InvalidInputError, "ttl_ms must be an int"),
    ("ttl-bool", lambda s: s.put("k", "v", True), InvalidInputError, "ttl_ms must be an int"),
    ("ttl-str", lambda s: s.put("k", "v", "10"), InvalidInputError, "ttl_ms must be an int"),
    ("ttl-huge", lambda s: s.put("k", "v", MAX_TTL_MS + 1), InvalidInputError, "over the limit"),
    ("text-type", lambda s: s.put("k", "v", 0, 5), InvalidInputError, "text must be str"),
    ("text-too-long", lambda s: s.put("k", "v", 0, "x" * 40_000), InvalidInputError, "over 32768"),
    ("scope-type", lambda s: s.put("k", "v", scope=5), InvalidInputError, "scope must be str"),
    ("scope-size", lambda s: s.put("k", "v", scope="s" * 513), LimitExceededError, "scope is 513 bytes"),
    ("scope-surrogate", lambda s: s.put("k", "v", scope="\udfff"), InvalidInputError, "scope is not valid Unicode"),
    ("vector-dim", lambda s: s.put("k", "v", vector=vec([1.0] * (DIM + 1))), InvalidInputError, "dimension 17"),
    ("vector-nan", lambda s: s.put("k", "v", vector=vec([math.nan] + [1.0] * (DIM - 1))), InvalidInputError, "NaN"),
    ("vector-inf", lambda s: s.put("k", "v", vector=vec([math.inf] + [1.0] * (DIM - 1))), InvalidInputError, "inf"),
    ("vector-zero", lambda s: s.put("k", "v", vector=vec([0.0] * DIM)), InvalidInputError, "zero vector"),
    ("vector-rows", lambda s: s.put("k", "v", vector=np.ones((2, DIM))), InvalidInputError, "got 2 rows"),
    ("vector-3d", lambda s: s.put("k", "v", vector=np.ones((1, 1, DIM))), InvalidInputError, "1-D or 2-D"),
    ("vector-text", lambda s: s.put("k", "v", vector="abc"), InvalidInputError, "not a numeric array"),
    ("get-key", lambda s: s.get(b"alpha"), InvalidInputError, "key must be str"),
    ("exists-key", lambda s: s.exists(""), InvalidInputError, "must not be empty"),
    ("delete-key", lambda s: s.delete(7), InvalidInputError, "key must be str"),
    ("delete-size", lambda s: s.delete("k" * 2000), LimitExceededError, "key is 2000 bytes"),
    ("search-top-k-zero", lambda s: s.search("q", top_k=0), InvalidInputError, "top_k must be a positive int"),
    ("search-top-k-float", lambda s: s.search("q", top_k=2.5), InvalidInputError, "top_k"),
    ("search-top-k-bool", lambda s: s.search("q", top_k=True), InvalidInputError, "top_k"),
    ("search-threshold-high", lambda s: s.search("q", threshold=1.5), InvalidInputError, "threshold must be"),
    ("search-threshold-nan", lambda s: s.search("q", threshold=math.nan), InvalidInputError, "threshold"),
    ("search-threshold-str", lambda s: s.search("q", threshold="0.5"), InvalidInputError, "threshold"),
    ("search-query-type", lambda s: s.search(42), InvalidInputError, "query must be str"),
    ("search-query-none", lambda s: s.search(None), InvalidInputError, "query must be str"),
    ("search-vector-dim", lambda s: s.search(None, vector=vec([1.0, 0.0])), InvalidInputError, "dimension 2"),
    ("search-vector-zero", lambda s: s.search(None, vector=vec([0.0] * DIM)), InvalidInputError, "zero vector"),
    ("search-scope", lambda s: s.search("q", scope=["t"]), InvalidInputError, "scope must be str"),
    ("scan-prefix", lambda s: s.scan(5), InvalidInputError, "prefix must be str"),
    ("scan-limit", lambda s: s.scan("", -1), InvalidInputError, "limit must be an int >= 0"),
    ("scan-limit-str", lambda s: s.scan("", "10"), InvalidInputError, "limit"),
    ("put-string", lambda s: s.put_string("k", b"bytes"), InvalidInputError, "put_string needs a str"),
    ("put-json-object", lambda s: s.put_json("k", object()), InvalidInputError, "not JSON-serialisable"),
    ("put-json-nan", lambda s: s.put_json("k", {"x": math.nan}), InvalidInputError, "not JSON-serialisable"),
    ("clear-scope-empty", lambda s: s.clear_scope(""), InvalidInputError, "use clear_all()"),
    ("clear-scope-type", lambda s: s.clear_scope(None), InvalidInputError, "scope_prefix"),
]


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in KV_CASES], ids=[c[0] for c in KV_CASES])
def test_kv_bad_input_is_refused_and_loses_nothing(kv, call, error, message):
    before = kv.digest()
    with pytest.raises(error, match=None) as info:
        call(kv)
    assert message in str(info.value)
    assert isinstance(info.value, SemcacheError) and isinstance(info.value, ValueError)
    assert_intact(kv, before)


def test_limit_errors_carry_the_limit_and_the_size():
    with SemanticKV(embedding=HashEmbedding(dim=DIM), limits=Limits(max_key_bytes=8, max_value_bytes=4)) as store:
        with pytest.raises(LimitExceededError) as info:
            store.put("123456789", "v")
        assert (info.value.limit, info.value.actual) == (8, 9)
        with pytest.raises(LimitExceededError) as info:
            store.put("k", "12345")
        assert (info.value.limit, info.value.actual) == (4, 5)
        assert store.put("12345678", "1234") and len(store) == 1


def test_an_embedder_returning_garbage_stores_nothing():
    outputs: dict[str, Any] = {
        "nan": [[math.nan] * 4],
        "zero": [[0.0] * 4],
        "short": [[1.0] * 3],
        "two-rows": [[1.0] * 4, [1.0] * 4],
        "text": "not numbers",
    }
    mode = ["ok"]

    def model(texts: list[str]) -> Any:
        return [[1.0, 2.0, 3.0, 4.0]] * len(texts) if mode[0] == "ok" else outputs[mode[0]]

    with SemanticKV(embedding=CallableEmbedding(model, dim=4)) as store:
        store.put("kept", "a value")
        before = store.digest()
        for name in outputs:
            mode[0] = name
            with pytest.raises(InvalidInputError, match="output|vectors for"):
                store.put(f"new-{name}", f"text {name}")
            assert store.digest() == before and store.get(f"new-{name}") is None
        assert store.get("kept") == b"a value"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eviction": "random"}, "unknown eviction policy 'random'; choose one of lru, lfu, ttl"),
        ({"capacity": 0}, "capacity must be a positive int"),
        ({"capacity": True}, "capacity must be a positive int"),
        ({"capacity": "10"}, "capacity must be a positive int"),
        ({"purge_interval": 0}, "purge_interval must be a number of seconds > 0"),
        ({"purge_interval": "1"}, "purge_interval"),
        ({"purge_interval": math.nan}, "purge_interval"),
        ({"max_entries": 0}, "max_entries must be a positive int"),
        ({"hnsw_m": 1}, "hnsw_m must be at least 2"),
        ({"ef_search": 0}, "ef_search must be a positive int"),
        ({"hnsw_ef_construction": 2.5}, "hnsw_ef_construction must be a positive int"),
        ({"checkpoint_bytes": 0}, "checkpoint_bytes must be a positive int"),
        ({"clock": 12}, "clock must be a callable"),
    ],
)
def test_bad_configuration_is_a_configuration_error(kwargs, message):
    with pytest.raises(ConfigurationError) as info:
        SemanticKV(embedding=HashEmbedding(dim=DIM), **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("field", ["max_key_bytes", "max_value_bytes", "max_scope_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_limits_are_a_configuration_error(field, value):
    with pytest.raises(ConfigurationError, match=f"limit {field} must be a positive int"):
        Limits(**{field: value})


def test_bad_embedding_argument():
    with pytest.raises(InvalidInputError, match="embedding must be None, a model name, an Embedding or a callable"):
        SemanticKV(embedding=123)
    with pytest.raises(ConfigurationError, match="dim must be at least 2"):
        HashEmbedding(dim=1)


def test_embed_rejects_bad_texts():
    emb = HashEmbedding(dim=DIM)
    with pytest.raises(InvalidInputError, match="list of str, not a single string"):
        emb.embed("one string")
    with pytest.raises(InvalidInputError, match="must be str, got int"):
        emb.embed(["ok", 3])
    with pytest.raises(InvalidInputError, match="must be str, got bytes"):
        emb.embed_one(b"bytes")
    assert emb.model_calls == 0


def test_every_operation_after_close_is_a_closed_error(kv):
    kv.close()
    calls: list[Callable[[], Any]] = [
        lambda: kv.put("k", "v"),
        lambda: kv.get("alpha"),
        lambda: kv.exists("alpha"),
        lambda: kv.delete("alpha"),
        lambda: kv.scan(""),
        lambda: kv.search("q"),
        lambda: kv.clear_all(),
        lambda: kv.clear_scope("tenant"),
        lambda: kv.checkpoint(),
        lambda: kv.purge_expired(),
        lambda: kv.put_json("k", {}),
    ]
    for call in calls:
        with pytest.raises(ClosedError, match="closed"):
            call()
    kv.close()  # closing twice is harmless


def test_closed_error_is_not_a_value_error():
    """Misuse after close is its own kind, not a bad argument."""
    assert not issubclass(ClosedError, ValueError) and issubclass(ClosedError, SemcacheError)


# ----------------------------------------------------------------- SemanticCache


@pytest.fixture
def cache(make_cache) -> SemanticCache:
    made = make_cache(threshold=0.9)
    made.store("what is the capital of france", "Paris", scope="t1")
    return made


class Unserialisable:
    pass


CACHE_CASES: list[tuple[str, Callable[[SemanticCache], Any], type[Exception], str]] = [
    ("prompt-type", lambda c: c.lookup(5), InvalidInputError, "prompt must be str"),
    ("prompt-empty", lambda c: c.store("", "x"), InvalidInputError, "prompt must not be empty"),
    ("prompt-blank", lambda c: c.lookup("   \n"), InvalidInputError, "prompt must not be empty"),
    ("scope-int", lambda c: c.lookup("q", scope=5), InvalidInputError, "scope must be a str, a mapping or None"),
    ("scope-list", lambda c: c.store("q", "a", scope=["t1"]), InvalidInputError, "scope must be a str, a mapping"),
    ("scope-object", lambda c: c.store("q", "a", scope={"x": Unserialisable()}), InvalidInputError, "not JSON"),
    ("scope-nan", lambda c: c.lookup("q", scope={"temperature": math.nan}), InvalidInputError, "scope is not JSON"),
    ("ttl-negative", lambda c: c.store("q", "a", ttl=-1), InvalidInputError, "ttl must be a finite number"),
    ("ttl-nan", lambda c: c.store("q", "a", ttl=math.nan), InvalidInputError, "ttl must be a finite number"),
    ("ttl-inf", lambda c: c.store("q", "a", ttl=math.inf), InvalidInputError, "ttl must be a finite number"),
    ("ttl-str", lambda c: c.store("q", "a", ttl="60"), InvalidInputError, "ttl must be"),
    ("ttl-huge", lambda c: c.store("q", "a", ttl=1e12), InvalidInputError, "over the limit"),
    ("threshold-high", lambda c: c.lookup("q", threshold=1.5), InvalidInputError, "a number in [0, 1]"),
    ("threshold-nan", lambda c: c.lookup("q", threshold=math.nan), InvalidInputError, "threshold"),
    ("response-object", lambda c: c.store("q", Unserialisable()), InvalidInputError, "not JSON-serialisable"),
    ("response-nan", lambda c: c.store("q", {"score": math.nan}), InvalidInputError, "not JSON-serialisable"),
    ("response-set", lambda c: c.store("q", {1, 2}), InvalidInputError, "not JSON-serialisable"),
    ("metadata-type", lambda c: c.store("q", "a", metadata="x"), InvalidInputError, "metadata must be a mapping"),
    ("metadata-object", lambda c: c.store("q", "a", metadata={"o": Unserialisable()}), InvalidInputError, "JSON"),
    ("prompt-too-long", lambda c: c.store("x " * 20_000, "a"), InvalidInputError, "over 32768"),
]


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in CACHE_CASES], ids=[c[0] for c in CACHE_CASES])
def test_cache_bad_input_is_refused_and_loses_nothing(cache, call, error, message):
    backend = cache.backend
    assert isinstance(backend, SemanticKV)
    before = backend.digest()
    with pytest.raises(error) as info:
        call(cache)
    assert message in str(info.value)
    assert backend.digest() == before
    hit = cache.lookup("what is the capital of france", scope="t1")
    assert hit is not None and hit.response == "Paris"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"threshold": 2}, InvalidInputError, "threshold must be a number in [0, 1]"),
        ({"threshold": "high"}, InvalidInputError, "threshold"),
        ({"ttl": -5}, InvalidInputError, "ttl must be"),
        ({"namespace": ""}, ConfigurationError, "namespace must be a non-empty str without '/'"),
        ({"namespace": "a/b"}, ConfigurationError, "namespace"),
        ({"embedding": HashEmbedding(dim=8)}, ConfigurationError, "does not match the backend's"),
    ],
)
def test_bad_cache_configuration(kwargs, error, message):
    backend = SemanticKV(embedding=HashEmbedding(dim=DIM))
    try:
        with pytest.raises(error) as info:
            SemanticCache(backend, **kwargs)
        assert message in str(info.value)
    finally:
        backend.close()


def test_cache_after_close_is_a_closed_error(cache):
    cache.close()
    with pytest.raises(ClosedError):
        cache.lookup("what is the capital of france", scope="t1")
    with pytest.raises(ClosedError):
        cache.store("another prompt", "answer")


# ------------------------------------------------------------- raw commands


def test_shard_state_validates_commands_before_they_are_logged():
    """A Raft leader validates before replicating; apply() of a validated command cannot fail."""
    state = ShardState(dim=4, model_id="m")
    bad = [
        (Put("k", b"v", "", b"\x00" * 12, 0, 0), EmbeddingMismatchError, "3 float32 values"),
        (Put("k", b"v", "", np.array([np.nan, 1, 1, 1], np.float32).tobytes(), 0, 0), InvalidInputError, "NaN"),
        (Put("k", b"v", "", np.zeros(4, np.float32).tobytes(), 0, 0), InvalidInputError, "all zeros"),
        (Put("k", "v", "", None, 0, 0), InvalidInputError, "value must be bytes"),  # type: ignore[arg-type]
        (Put("k", b"v", "", None, -1, 0), InvalidInputError, "timestamp -1"),
        (Put("k", b"v", "", None, 0, 2**63), InvalidInputError, "outside"),
        (Put("", b"v", "", None, 0, 0), InvalidInputError, "must not be empty"),
        (Put("k", b"v", 3, None, 0, 0), InvalidInputError, "scope must be str"),  # type: ignore[arg-type]
        (Delete(5), InvalidInputError, "key must be str"),  # type: ignore[arg-type]
        (Evict(("ok", "")), InvalidInputError, "must not be empty"),
        (Clear(None), InvalidInputError, "scope prefix must be str"),  # type: ignore[arg-type]
        (Expire(1.5), InvalidInputError, "expire time must be int"),  # type: ignore[arg-type]
    ]
    for command, error, message in bad:
        with pytest.raises(error, match=message.replace("(", r"\(")):
            state.validate(command)
    assert state.applied == 0 and not state.entries
