"""The adapters' exact-hit fast path (remembered plans, decoded hits and built answers) never serves stale,
shared or cross-scope answers.

Each test first makes the fast path warm (the same request hit at least twice), then changes what is stored
or what is asked, and checks that the answer follows.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration
from openai import AsyncOpenAI
from semcache.integrations._memo import AnswerMemo, fingerprint
from semcache.integrations.langchain import LangChainSemanticCache
from semcache.integrations.openai import cache_info, is_cached, semantic_cache, wrap
from support.clocks import Clock

from semcache import SemanticCache, SemanticKV
from semcache.errors import ConfigurationError

MODEL = "gpt-4o-mini"
QUESTION = "What is the capital of France?"
LLM = "ChatOpenAI|model=gpt-4o-mini|temperature=0"


def user(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000_000)


@pytest.fixture
def cache(make_cache):
    return make_cache()


@pytest.fixture
def client(raw_client, cache):
    wrapped = wrap(raw_client, cache=cache, write_behind=False)
    yield wrapped
    wrapped.semcache.close()


def ask(client, text: str = QUESTION, **kwargs):
    return client.chat.completions.create(model=kwargs.pop("model", MODEL), messages=user(text), **kwargs)


def warm(client, text: str = QUESTION, **kwargs):
    """Miss, then two exact hits: the plan, the decoded hit and the built answer are all remembered."""
    miss = ask(client, text, **kwargs)
    first, second = ask(client, text, **kwargs), ask(client, text, **kwargs)
    assert not is_cached(miss) and is_cached(first) and is_cached(second)
    assert cache_info(second)["exact"] is True
    assert first.id == second.id == miss.id
    return miss


# ------------------------------------------------------------------ stored entry changes
def test_wrap_hit_after_an_overwrite_by_another_adapter_returns_the_new_answer(client, raw_client, cache, server):
    old = warm(client)
    other = wrap(raw_client, cache=cache, write_behind=False)  # its own memos: like another process
    new = ask(other, cache_refresh=True)
    assert new.id != old.id and server.count("chat.completions") == 2
    hit = ask(client)
    assert is_cached(hit) and hit.id == new.id
    assert ask(client).id == new.id  # and the new answer is what is remembered now


def test_wrap_hit_after_a_write_through_another_cache_on_the_backend(client, cache, server):
    warm(client)
    plan = client.semcache.plan("chat.completions", {"model": MODEL, "messages": user()}, {})
    stored = cache.lookup(plan.prompt, scope=plan.scope).response
    changed = {**stored, "completion": {**stored["completion"], "id": "chatcmpl-other-writer"}}
    changed["completion"]["choices"] = [
        {**stored["completion"]["choices"][0], "message": {"role": "assistant", "content": "Lyon (overwritten)"}}
    ]
    writer = SemanticCache(cache.backend)  # same backend, no shared memo
    writer.store(plan.prompt, changed, scope=plan.scope, metadata={"endpoint": "chat.completions"})
    hit = ask(client)
    assert (hit.id, hit.choices[0].message.content) == ("chatcmpl-other-writer", "Lyon (overwritten)")
    assert server.count("chat.completions") == 1


@pytest.mark.parametrize("drop", ["clear", "clear_scope", "delete", "expire"])
def test_wrap_hit_after_the_entry_is_gone_is_a_miss(client, cache, server, clock, drop):
    warm(client)
    plan = client.semcache.plan("chat.completions", {"model": MODEL, "messages": user()}, {})
    if drop == "clear":
        cache.clear()
    elif drop == "clear_scope":
        cache.clear(scope=plan.scope)
    elif drop == "delete":
        assert cache.delete(plan.prompt, scope=plan.scope)
    else:
        # The entry was stored without a TTL: store it again with one, and warm the fast path on it.
        cache.store(plan.prompt, cache.lookup(plan.prompt, scope=plan.scope).response, scope=plan.scope, ttl=5)
        assert is_cached(ask(client)) and is_cached(ask(client))
        clock.now += 6_000
    calls = server.count("chat.completions")
    again = ask(client)
    assert not is_cached(again) and server.count("chat.completions") == calls + 1


def test_ttl_set_on_the_adapter_expires_warm_hits(raw_client, hash_embedding, clock, server):
    cache = SemanticCache(SemanticKV(embedding=hash_embedding, clock=clock))
    client = wrap(raw_client, cache=cache, ttl=10, write_behind=False)
    warm(client)
    clock.now += 9_000
    assert is_cached(ask(client))
    clock.now += 2_000
    assert not is_cached(ask(client)) and server.count("chat.completions") == 2


# ------------------------------------------------------------------ no shared objects
def test_wrap_callers_mutating_their_hits_do_not_affect_each_other(client):
    ask(client)  # the miss
    # Seen once (built for its caller alone), remembered (built, then copied), then served from the memo.
    hits = [ask(client) for _ in range(4)]
    assert all(is_cached(h) for h in hits) and len({id(h) for h in hits}) == 4
    for hit in hits[:3]:
        hit.choices[0].message.content = "mutated"
        hit.choices.append(hit.choices[0])
        hit.usage.total_tokens = 99
        cache_info(hit)["cached_prompt"] = "mutated"
        hit.id = "mutated"
    for later in (hits[3], ask(client)):
        assert later.choices[0].message.content != "mutated" and len(later.choices) == 1
        assert later.usage.total_tokens == 0 and later.id != "mutated"
        assert cache_info(later)["cached_prompt"] == QUESTION


def test_wrap_tool_call_hits_do_not_share_arguments(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = "What is the weather in Paris?"
    warm(client, text, tools=tools)
    first, second = ask(client, text, tools=tools), ask(client, text, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    original = second.choices[0].message.tool_calls[0].function.arguments
    call.function.arguments = "{}"
    first.choices[0].message.tool_calls.clear()
    assert second.choices[0].message.tool_calls[0].function.arguments == original
    assert ask(client, text, tools=tools).choices[0].message.tool_calls[0].function.arguments == original


def test_decorator_json_values_are_fresh_per_call(cache):
    calls = []
    answer = {"answer": "Paris", "sources": [{"title": "atlas"}]}

    @semantic_cache(cache=cache, write_behind=False)
    def ask_json(question: str) -> dict:
        calls.append(question)
        return {"answer": "Paris", "sources": [{"title": "atlas"}]}

    for _ in range(3):  # a miss, then warm hits
        assert ask_json(QUESTION) == answer
    first, second = ask_json(QUESTION), ask_json(QUESTION)
    assert first is not second
    first["sources"][0]["title"] = "mutated"
    first["extra"] = True
    assert second == ask_json(QUESTION) == answer
    assert len(calls) == 1


def test_async_client_hits_are_fresh_and_follow_overwrites(server, cache):
    server.reset()

    async def scenario():
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as raw:
            client = wrap(raw, cache=cache, write_behind=False)
            other = wrap(raw, cache=cache, write_behind=False)

            async def ask_async(c, **kwargs):
                return await c.chat.completions.create(model=MODEL, messages=user(), **kwargs)

            miss = await ask_async(client)
            first, second = await ask_async(client), await ask_async(client)
            first.choices[0].message.content = "mutated"
            refreshed = await ask_async(other, cache_refresh=True)
            after = await ask_async(client)
            return miss, second, refreshed, after

    miss, second, refreshed, after = asyncio.run(scenario())
    assert second.choices[0].message.content != "mutated" and second.id == miss.id
    assert is_cached(after) and after.id == refreshed.id != miss.id


# ------------------------------------------------------------------ scopes still partition
def test_warm_requests_still_partition_by_model_temperature_and_system_prompt(raw_client, cache, server):
    client = wrap(raw_client, cache=cache, sampling="all", write_behind=False)
    warm(client)
    assert not is_cached(ask(client, model="gpt-4o"))
    assert not is_cached(ask(client, temperature=0.7))
    with_system = [{"role": "system", "content": "Answer in French."}, *user()]
    assert not is_cached(client.chat.completions.create(model=MODEL, messages=with_system))
    assert not is_cached(ask(client, cache_scope={"tenant": "b"}))
    assert server.count("chat.completions") == 5
    assert is_cached(ask(client, temperature=0.7)) and is_cached(ask(client, model="gpt-4o"))
    assert server.count("chat.completions") == 5


def test_a_request_list_changed_in_place_is_planned_again(client, server):
    messages = [{"role": "system", "content": "Be brief."}, *user()]
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=messages)
    assert server.count("chat.completions") == 1
    messages[0]["content"] = "Be verbose."
    assert not is_cached(client.chat.completions.create(model=MODEL, messages=messages))
    assert server.count("chat.completions") == 2


def test_values_equal_in_json_but_of_other_types_do_not_share_a_plan(cache):
    calls = []

    @semantic_cache(cache=cache, write_behind=False)
    def ask_n(question: str, n: object = 1) -> str:
        calls.append(n)
        return f"{question} x{n!r}"

    assert ask_n(QUESTION, n=1) == ask_n(QUESTION, n=1) == f"{QUESTION} x1"
    assert ask_n(QUESTION, n=True) == f"{QUESTION} xTrue"  # true vs 1 in the scope: another entry
    assert ask_n(QUESTION, n=1.0) == f"{QUESTION} x1.0"
    # JSON would write both keys as "true"; the scope keeps them apart ("True" and "true").
    assert ask_n(QUESTION, n={True: 1}) == ask_n(QUESTION, n={True: 1}) == f"{QUESTION} x{{True: 1}}"
    assert ask_n(QUESTION, n={"true": 1}) == f"{QUESTION} x{{'true': 1}}"
    assert calls == [1, True, 1.0, {True: 1}, {"true": 1}]


def test_fingerprint_is_exact_over_types_and_refuses_objects():
    assert fingerprint({"a": [1, "x"]}) == fingerprint({"a": [1, "x"]})
    assert len({fingerprint(v) for v in ({"a": 1}, {"a": True}, {"a": 1.0}, {"a": "1"}, {1: "a"}, {True: "a"})}) == 6
    assert fingerprint({"a": [1]}) != fingerprint({"a": (1,)})

    class Text(str):
        pass

    assert fingerprint({"a": Text("x")}) is None and fingerprint({"client": object()}) is None


def test_small_memos_stay_correct_when_entries_are_evicted(raw_client, cache, server):
    client = wrap(raw_client, cache=cache, memo_size=1, write_behind=False)
    questions = [f"Question number {i}?" for i in range(3)]
    answers = {q: ask(client, q).choices[0].message.content for q in questions}
    for _ in range(2):
        for q in questions:
            hit = ask(client, q)
            assert is_cached(hit) and hit.choices[0].message.content == answers[q]
    assert server.count("chat.completions") == 3
    with pytest.raises(ConfigurationError):
        wrap(raw_client, cache=cache, memo_size=0)


def test_exact_hits_are_still_counted_by_the_cache_and_the_adapter(client, cache):
    warm(client)
    before = cache.stats.exact_hits
    for _ in range(3):
        ask(client)
    assert cache.stats.exact_hits == before + 3
    assert client.semcache.stats.hits == 5 and client.semcache.stats.misses == 1


def test_answer_memo_serves_only_the_hit_object_it_was_built_from(cache):
    cache.store(QUESTION, "Paris")
    hit = cache.lookup(QUESTION)
    memo = AnswerMemo()
    memo.put(hit, '"Paris"', lambda text: text.strip('"'))
    assert memo.get(hit) == "Paris"
    assert memo.get(cache.lookup(QUESTION)) is None  # an equal hit decoded again: not the same object


# ------------------------------------------------------------------ LangChain
def lc_prompt(text: str = QUESTION, system: str | None = None) -> str:
    messages = ([SystemMessage(system)] if system else []) + [HumanMessage(text)]
    return dumps(messages)


def generations(content: str) -> list[ChatGeneration]:
    message = AIMessage(
        content,
        additional_kwargs={"refusal": None, "extra": {"nested": ["a"]}},
        response_metadata={"model_name": MODEL, "token_usage": {"total_tokens": 7}},
    )
    return [ChatGeneration(message=message, generation_info={"finish_reason": "stop"})]


@pytest.fixture
def lc_cache(cache):
    adapter = LangChainSemanticCache(cache, write_behind=False)
    yield adapter
    adapter.close()


def lc_warm(adapter, prompt: str, content: str) -> None:
    adapter.update(prompt, LLM, generations(content))
    for _ in range(2):
        hit = adapter.lookup(prompt, LLM)
        assert hit is not None and hit[0].message.content == content


def test_langchain_hit_after_an_overwrite_returns_the_new_generations(lc_cache, cache):
    lc_warm(lc_cache, lc_prompt(), "Paris")
    other = LangChainSemanticCache(cache, write_behind=False)  # its own memos: like another process
    other.update(lc_prompt(), LLM, generations("Paris, France"))
    assert lc_cache.lookup(lc_prompt(), LLM)[0].message.content == "Paris, France"


@pytest.mark.parametrize("drop", ["clear", "clear_scope", "other_adapter_clear", "expire"])
def test_langchain_hit_after_the_entry_is_gone_is_a_miss(cache, clock, drop):
    adapter = LangChainSemanticCache(cache, ttl=5 if drop == "expire" else None, write_behind=False)
    lc_warm(adapter, lc_prompt(), "Paris")
    if drop == "clear":
        adapter.clear()
    elif drop == "clear_scope":
        adapter.clear(scope=None)
    elif drop == "other_adapter_clear":
        LangChainSemanticCache(cache, write_behind=False).clear()  # its own memos: like another process
    else:
        clock.now += 6_000
    assert adapter.lookup(lc_prompt(), LLM) is None


def test_langchain_callers_mutating_their_generations_do_not_affect_each_other(lc_cache):
    lc_cache.update(lc_prompt(), LLM, generations("Paris"))
    # Seen once (built for its caller alone), remembered (built, then copied), then served from the memo.
    hits = [lc_cache.lookup(lc_prompt(), LLM) for _ in range(4)]
    assert all(h == hits[0] for h in hits) and len({id(h[0].message) for h in hits}) == 4
    for hit in hits[:3]:
        hit[0].message.content = "mutated"
        hit[0].message.additional_kwargs["extra"]["nested"].append("mutated")
        hit[0].message.response_metadata["token_usage"]["total_tokens"] = 99
        hit[0].generation_info["finish_reason"] = "mutated"
        hit.append(hit[0])
    for later in (hits[3], lc_cache.lookup(lc_prompt(), LLM)):
        assert len(later) == 1 and later[0].message.content == "Paris" and later[0].text == "Paris"
        assert later[0].message.additional_kwargs["extra"] == {"nested": ["a"]}
        assert later[0].message.response_metadata["token_usage"]["total_tokens"] == 7
        assert later[0].generation_info == {"finish_reason": "stop"}


def test_langchain_pending_generations_are_not_shared_with_the_write(hash_embedding, monkeypatch):
    adapter = LangChainSemanticCache(SemanticCache(SemanticKV(embedding=hash_embedding)))
    view, release = adapter.cache, threading.Event()
    store = view.store

    def store_when_released(*args, **kwargs):  # the entry stays pending (and its payload unserialised) meanwhile
        assert release.wait(30)
        return store(*args, **kwargs)

    monkeypatch.setattr(view, "store", store_when_released)
    adapter.update(lc_prompt(), LLM, generations("Paris"))
    pending = adapter.lookup(lc_prompt(), LLM)
    assert adapter.stats.pending_hits == 1
    pending[0].message.additional_kwargs["extra"]["nested"].append("mutated")
    pending[0].message.response_metadata["token_usage"]["total_tokens"] = 99
    release.set()
    assert adapter.flush(timeout=30)
    stored = adapter.lookup(lc_prompt(), LLM)
    assert adapter.stats.hits == 2 and adapter.stats.pending_hits == 1
    assert stored[0].message.additional_kwargs["extra"] == {"nested": ["a"]}
    assert stored[0].message.response_metadata["token_usage"]["total_tokens"] == 7
    adapter.close()


def test_langchain_warm_prompts_still_partition_by_llm_string_and_system_prompt(lc_cache):
    lc_warm(lc_cache, lc_prompt(), "Paris")
    assert lc_cache.lookup(lc_prompt(), LLM.replace("temperature=0", "temperature=0.7")) is None
    assert lc_cache.lookup(lc_prompt(), LLM.replace(MODEL, "gpt-4o")) is None
    assert lc_cache.lookup(lc_prompt(system="Answer in French."), LLM) is None
    lc_warm(lc_cache, lc_prompt(system="Answer in French."), "Paris (fr)")
    assert lc_cache.lookup(lc_prompt(), LLM)[0].message.content == "Paris"
    assert lc_cache.lookup(lc_prompt(system="Answer in French."), LLM)[0].message.content == "Paris (fr)"


def test_answers_the_client_would_not_validate_are_not_shared_either(client, cache):
    warm(client)
    plan = client.semcache.plan("chat.completions", {"model": MODEL, "messages": user()}, {})
    stored = cache.lookup(plan.prompt, scope=plan.scope).response
    odd = {**stored, "completion": {**stored["completion"], "choices": [{**stored["completion"]["choices"][0]}]}}
    odd["completion"]["choices"][0]["finish_reason"] = "a_reason_newer_than_this_client"  # fails validation
    odd["completion"]["provider_extras"] = {"trace": ["a"]}  # a field this client does not know: kept as it is
    SemanticCache(cache.backend).store(plan.prompt, odd, scope=plan.scope, metadata={"endpoint": "chat.completions"})
    hits = [ask(client) for _ in range(4)]
    assert all(h.choices[0].finish_reason == "a_reason_newer_than_this_client" for h in hits)
    for hit in hits[:3]:
        hit.provider_extras["trace"].append("mutated")
        hit.choices[0].message.content = "mutated"
        hit.choices.clear()
    for later in (hits[3], ask(client)):
        assert later.choices[0].message.content != "mutated" and later.provider_extras == {"trace": ["a"]}
