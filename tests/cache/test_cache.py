"""SemanticCache: exact path, round-trips, TTL, single-flight, clear, scopes, stats."""

from __future__ import annotations

import threading

import pytest
from support.wait import wait_until

from semcache import Backend, SemanticCache, SemanticKV, canonical_scope, normalize_prompt
from semcache.embeddings import HashEmbedding
from semcache.errors import ConfigurationError, InvalidInputError


def test_the_embedded_store_is_a_backend():
    with SemanticKV(embedding=HashEmbedding(dim=8)) as kv:
        assert isinstance(kv, Backend)


def test_exact_hits_do_not_touch_the_embedder(cache):
    cache.store("What is the capital of France?", "Paris")
    emb = cache.embedding
    calls, memo = emb.model_calls, emb.memo_hits
    variants = [
        "What is the capital of France?",
        " What is the  capital of France?\n",
        "What\u3000is the capital of France?",  # NFKC turns the ideographic space into a space
    ]
    for variant in variants:
        hit = cache.lookup(variant)
        assert hit is not None and hit.exact and hit.similarity == 1.0 and hit.response == "Paris"
    assert (emb.model_calls, emb.memo_hits) == (calls, memo)
    assert cache.stats.exact_hits == 3 and cache.stats.semantic_hits == 0


def test_a_semantic_hit_goes_through_the_embedder(cache):
    cache.store("how do i reset my account password", "Use the reset link.")
    hit = cache.lookup("how can i reset my account password")
    assert hit is not None and not hit.exact
    assert 0.7 <= hit.similarity < 1.0
    assert hit.cached_prompt == "how do i reset my account password"
    assert cache.lookup("what is the weather like on mars today") is None
    assert (cache.stats.semantic_hits, cache.stats.misses) == (1, 1)
    assert cache.stats.hit_rate == pytest.approx(0.5)


@pytest.mark.parametrize(
    "response",
    [
        "plain text ünïcode",
        "",
        b"\x00\xffraw bytes, not UTF-8",
        {"choices": [{"message": {"content": "hi"}}], "usage": {"total_tokens": 3}},
        ["a", 1, 2.5, None, True],
        42,
        None,
    ],
    ids=["str", "empty-str", "bytes", "dict", "list", "int", "none"],
)
def test_responses_come_back_as_they_were_given(cache, response):
    key = cache.store("a prompt to cache", response, metadata={"model": "gpt-4o", "tokens": 3})
    hit = cache.lookup("a prompt to cache")
    assert hit is not None and hit.key == key
    assert hit.response == response and type(hit.response) is type(response)
    assert hit.metadata == {"model": "gpt-4o", "tokens": 3}


def test_a_tuple_comes_back_as_a_list(cache):
    """JSON has no tuples: documented, not silent."""
    cache.store("tuple prompt", ("a", 1))
    assert cache.lookup("tuple prompt").response == ["a", 1]


def test_ttl_is_in_seconds(cache, clock):
    cache.store("short lived prompt", "soon gone", ttl=1.5)
    cache.store("another prompt entirely", "stays")
    clock.now += 1_499
    assert cache.lookup("short lived prompt") is not None
    clock.now += 1
    assert cache.lookup("short lived prompt") is None
    assert cache.lookup("another prompt entirely") is not None


def test_the_default_ttl_applies_unless_store_overrides_it(clock):
    backend = SemanticKV(embedding=HashEmbedding(dim=64), clock=clock, purge_interval=3600)
    with SemanticCache(backend, ttl=10) as cache:
        cache.store("default ttl prompt", "a")
        cache.store("longer ttl prompt", "b", ttl=60)
        cache.store("tiny ttl prompt", "c", ttl=0.0001)  # rounds up to 1 ms, never to "no expiry"
        clock.now += 1
        assert cache.lookup("tiny ttl prompt") is None
        clock.now += 10_000
        assert cache.lookup("default ttl prompt") is None
        assert cache.lookup("longer ttl prompt").response == "b"


def test_store_many_warms_the_cache_as_store_would(cache, clock):
    pairs = {f"how do i export report {n} as a pdf file": f"answer {n}" for n in range(100)}
    pairs["how do i reset my account password"] = {"steps": ["Settings", "Reset"]}
    scope = {"tenant": "acme", "model": "m"}
    calls = cache.embedding.model_calls
    keys = cache.store_many(pairs, scope=scope, ttl=60)
    assert cache.embedding.model_calls - calls == 2  # 101 prompts embedded 64 at a time
    assert keys == [cache.key_for(prompt, scope) for prompt in pairs] and cache.stats.stores == 101
    exact = cache.lookup(" how do i export  report 7 as a pdf file\n", scope=scope)  # normalised: the exact path
    assert exact is not None and exact.exact and exact.response == "answer 7"
    # The semantic path, in a scope of three entries: each is the others' graph neighbour, so any
    # search compares all of them. (Among the 100 templated prompts above, which are near-equidistant
    # from this query, whether a graph walk reaches the one distinct entry depends on the hnswlib build.)
    small = {"tenant": "acme", "model": "small"}
    cache.store_many({"how do i reset my account password": {"steps": ["Settings", "Reset"]},
                      "what is the refund policy for annual plans": "30 days",
                      "which regions does the service run in": "EU and US"}, scope=small)
    near = cache.lookup("how can i reset my account password", scope=small)
    assert near is not None and not near.exact and near.response == {"steps": ["Settings", "Reset"]}
    assert cache.lookup("how do i export report 7 as a pdf file", scope={"tenant": "other", "model": "m"}) is None
    cache.store_many([("a prompt with no ttl", "stays")], scope=scope)
    clock.now += 60_000
    assert cache.lookup("how do i export report 7 as a pdf file", scope=scope) is None
    assert cache.lookup("a prompt with no ttl", scope=scope).response == "stays"


def test_store_many_refuses_a_bad_pair_and_stores_none_of_the_call(cache):
    with pytest.raises(InvalidInputError, match="store_many pair 1: prompt must not be empty"):
        cache.store_many([("a fine prompt", "ok"), ("   ", "blank prompt")])
    with pytest.raises(InvalidInputError, match="store_many pair 0: response or metadata is not JSON"):
        cache.store_many({"a fine prompt": object()})
    with pytest.raises(InvalidInputError, match="store_many pair 0: must be a"):
        cache.store_many(["just a prompt"])
    with pytest.raises(InvalidInputError, match="store_many needs a mapping"):
        cache.store_many("not pairs")
    assert cache.lookup("a fine prompt") is None and cache.stats.stores == 0
    assert cache.store_many([]) == []


def test_get_or_compute_calls_fn_once_for_concurrent_misses(cache):
    release = threading.Event()
    calls: list[int] = []

    def slow_llm() -> str:
        calls.append(1)
        assert release.wait(timeout=60)
        return "computed once"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("expensive question", slow_llm)))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats.single_flight_waits == 15)  # everyone but the leader is waiting
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 1 and results == ["computed once"] * 16
    assert cache.stats.computes == 1
    assert cache.lookup("expensive question").response == "computed once"


def test_a_leader_arriving_after_the_previous_one_stored_does_not_recompute(cache):
    """Regression: a miss that loses the race to a finished leader re-checks before calling fn."""
    assert cache.get_or_compute("the question", lambda: "first answer") == "first answer"
    cache.lookup = lambda *args, **kwargs: None  # type: ignore[method-assign] # a stale miss

    def must_not_run() -> str:
        raise AssertionError("fn ran twice")

    assert cache.get_or_compute("the question", must_not_run) == "first answer"


def test_an_exception_in_fn_is_not_cached_and_each_waiter_runs_fn_itself(cache):
    """The single-flight failure semantic: a follower of a failed leader is not handed its exception."""
    release = threading.Event()
    calls: list[int] = []

    def failing() -> str:
        calls.append(1)
        assert release.wait(timeout=60)
        raise RuntimeError("upstream down")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get_or_compute("fragile question", failing)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats.single_flight_waits == 3)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(errors) == 4 and len({id(e) for e in errors}) == 4  # each caller its own exception
    assert len(calls) == 4 and cache.stats.computes == 4  # the leader's call, then one per waiter
    assert cache.lookup("fragile question") is None
    assert cache.get_or_compute("fragile question", lambda: "recovered") == "recovered"


def test_waiters_of_a_failed_leader_get_answers_of_their_own(cache):
    release = threading.Event()
    attempts: list[int] = []

    def flaky() -> str:  # fails only the first time (the leader's call)
        attempts.append(1)
        if len(attempts) == 1:
            assert release.wait(timeout=60)
            raise RuntimeError("transient")
        return "answer"

    outcomes: list[str] = []

    def call() -> None:
        try:
            outcomes.append(cache.get_or_compute("flaky question", flaky))
        except RuntimeError:
            outcomes.append("error")

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats.single_flight_waits == 2)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["answer", "answer", "error"]
    assert cache.lookup("flaky question").response == "answer"


def test_a_path_instead_of_a_backend_is_refused_at_once(tmp_path):
    for path in ("./some-dir", tmp_path / "cache"):
        with pytest.raises(ConfigurationError, match=r"a path is not a backend; .*pass SemanticCache\(SemanticKV\('"):
            SemanticCache(path)  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists()


def test_clear_scope_drops_only_that_scope_and_clear_drops_the_namespace(clock):
    backend = SemanticKV(embedding=HashEmbedding(dim=64), clock=clock)
    mine = SemanticCache(backend, threshold=0.7)
    other = SemanticCache(backend, threshold=0.7, namespace="other-app")
    for scope in ("a", "b", None):
        mine.store("shared prompt", f"answer {scope}", scope=scope)
    other.store("shared prompt", "other app answer", scope="a")

    assert mine.clear("a") == 1  # regression: used to match nothing
    assert mine.lookup("shared prompt", scope="a") is None
    assert mine.lookup("shared prompt", scope="b").response == "answer b"
    assert mine.clear(None) == 1  # the default scope only
    assert mine.lookup("shared prompt") is None
    assert mine.lookup("shared prompt", scope="b") is not None
    assert mine.clear() == 1  # everything left in this namespace
    assert mine.lookup("shared prompt", scope="b") is None
    assert other.lookup("shared prompt", scope="a").response == "other app answer"
    backend.close()


def test_scopes_are_canonical_mappings(cache):
    assert canonical_scope({"a": 1, "b": 2}) == canonical_scope({"b": 2, "a": 1})
    assert canonical_scope({"x": {"p": 1, "q": [1, 2]}}) == canonical_scope({"x": {"q": [1, 2], "p": 1}})
    assert canonical_scope("a") != canonical_scope({"a": None}) != canonical_scope(None)
    assert canonical_scope(None) != canonical_scope("null")
    cache.store("scoped prompt", "scoped answer", scope={"tenant": "t1", "model": "m", "temperature": 0.2})
    hit = cache.lookup("scoped prompt", scope={"temperature": 0.2, "model": "m", "tenant": "t1"})
    assert hit is not None and hit.exact
    assert cache.lookup("scoped prompt", scope={"tenant": "t1", "model": "m", "temperature": 0.3}) is None
    assert cache.lookup("scoped prompt") is None


def test_normalize_prompt():
    assert normalize_prompt("  Hello\t\n  world ") == "Hello world"
    assert normalize_prompt("ｆｕｌｌ width") == "full width"


def test_delete_removes_the_exact_prompt(cache):
    cache.store("to be deleted", "x")
    assert cache.delete("  to be   deleted ")
    assert cache.lookup("to be deleted") is None
    assert not cache.delete("to be deleted")


def test_the_guard_vetoes_a_near_miss_and_counts_it(clock):
    backend = SemanticKV(embedding=HashEmbedding(dim=64), clock=clock)
    with SemanticCache(backend, threshold=0.6) as guarded:
        guarded.store("how do i enable dark mode", "Settings > Enable")
        assert guarded.lookup("how do i disable dark mode") is None
        assert guarded.stats.guard_vetoes == 1 and guarded.stats.vetoes_by_reason == {"antonym": 1}
        unguarded = SemanticCache(backend, threshold=0.6, guard=False)
        assert unguarded.lookup("how do i disable dark mode").response == "Settings > Enable"


def test_a_foreign_value_under_a_cache_key_is_ignored(cache):
    key = cache.key_for("some prompt")
    cache.backend.put(key, b"not json at all", scope=cache.scope_id(None))
    assert cache.lookup("some prompt") is None


def test_a_persistent_cache_survives_a_restart(tmp_path):
    emb = HashEmbedding(dim=64)
    with SemanticCache(SemanticKV(tmp_path, embedding=emb), threshold=0.7) as cache:
        cache.store("how do i rotate my api keys", {"answer": "Use the console."}, scope="t1", metadata={"v": 1})
    with SemanticCache(SemanticKV(tmp_path, embedding=emb), threshold=0.7) as cache:
        exact = cache.lookup("how do i rotate my api keys", scope="t1")
        semantic = cache.lookup("how can i rotate my api keys", scope="t1")
        assert exact.exact and exact.response == {"answer": "Use the console."} and exact.metadata == {"v": 1}
        assert semantic is not None and not semantic.exact
