"""``LangChainSemanticCache``: LangChain's standard cache suites, and end to end with ``ChatOpenAI``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from semcache.integrations.langchain import LangChainSemanticCache, conversation_of

from semcache import SemanticCache, SemanticKV
from semcache.embeddings import HashEmbedding
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.testing import fake_answer


def new_cache(**kwargs) -> LangChainSemanticCache:
    return LangChainSemanticCache(SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64))), **kwargs)


class TestSemcacheSyncCacheSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> LangChainSemanticCache:
        return new_cache()


class TestSemcacheAsyncCacheSuite(AsyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> LangChainSemanticCache:
        return new_cache()


# The suite's async tests carry no marker (LangChain runs them in pytest-asyncio's auto mode;
# this project is strict).  Mark the suite's own functions: the suite fails a subclass that
# overrides them, so wrapping them here is not an option.
for _name, _test in vars(AsyncCacheTestSuite).items():
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        pytest.mark.asyncio(_test)


# ------------------------------------------------------------------- unit behaviour
def test_llm_string_is_a_hard_partition():
    cache = new_cache()
    cache.update("What is the capital of France?", "gpt-4o-mini|t=0", [Generation(text="Paris")])
    assert cache.lookup("What is the capital of France?", "gpt-4o-mini|t=0") == [Generation(text="Paris")]
    assert cache.lookup("What is the capital of France?", "gpt-4o|t=0") is None
    assert cache.lookup("What is the capital of France?", "gpt-4o-mini|t=0.5") is None


def test_truthy_even_when_empty():
    cache = new_cache()
    assert bool(cache) and not hasattr(cache, "__len__")


def test_chat_prompt_is_parsed_into_text_and_context():
    prompt = dumps([SystemMessage("Be brief."), HumanMessage("Capital of  France?")])
    text, context = conversation_of(prompt)
    assert text == "Capital of  France?"
    assert context == [{"role": "system", "content": "Be brief."}, {"role": "(prompt)"}]
    with_ids = dumps(
        [
            HumanMessage("Weather?"),
            AIMessage("", tool_calls=[{"name": "w", "args": {"c": "Paris"}, "id": "call_1"}], id="run-1"),
            ToolMessage("sunny", tool_call_id="call_1"),
            HumanMessage("And tomorrow?"),
        ]
    )
    again = dumps(
        [
            HumanMessage("Weather?"),
            AIMessage("", tool_calls=[{"name": "w", "args": {"c": "Paris"}, "id": "call_2"}], id="run-2"),
            ToolMessage("sunny", tool_call_id="call_2"),
            HumanMessage("And tomorrow?"),
        ]
    )
    assert conversation_of(with_ids) == conversation_of(again)  # run-specific ids do not matter
    image = dumps([HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])])
    assert conversation_of(image) is None
    assert conversation_of("   ") is None
    assert conversation_of("[not json") == ("[not json", [])
    assert conversation_of(dumps([SystemMessage("Only a system prompt")])) == ("system: Only a system prompt", [])


def test_uncacheable_prompts_are_bypassed():
    cache = new_cache()
    image = dumps([HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])])
    cache.update(image, "m", [Generation(text="a cat")])
    assert cache.lookup(image, "m") is None
    assert cache.stats.bypassed == 2 and cache.stats.stores == 0


def test_chat_generations_round_trip():
    cache = new_cache(write_behind=False)
    message = AIMessage(
        "It is sunny.",
        tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}],
        response_metadata={"finish_reason": "stop"},
    )
    generation = ChatGeneration(message=message, generation_info={"finish_reason": "stop"})
    cache.update(dumps([HumanMessage("Weather in Paris?")]), "m", [generation])
    (hit,) = cache.lookup(dumps([HumanMessage("Weather in Paris?")]), "m")
    assert isinstance(hit, ChatGeneration) and hit.message == message and hit.text == "It is sunny."
    with pytest.raises(InvalidInputError):
        cache.update("x", "m", ["not a generation"])


def test_clear_drops_only_this_adapter_or_one_scope():
    base = SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64)))
    tenant_a = LangChainSemanticCache(base, scope={"tenant": "a"})
    tenant_b = LangChainSemanticCache(base, scope={"tenant": "b"})
    base.store("What is semcache?", "a semantic cache")  # someone else's entry on the same backend
    for adapter in (tenant_a, tenant_b):
        adapter.update("What is the capital of France?", "m", [Generation(text="Paris")])
    assert tenant_b.lookup("What is the capital of France?", "m") is not None
    tenant_a.clear()  # also waits for its pending write
    assert tenant_a.lookup("What is the capital of France?", "m") is None
    assert tenant_b.lookup("What is the capital of France?", "m") is not None
    assert base.lookup("What is semcache?") is not None
    assert tenant_b.flush(timeout=10)  # clear(scope=...) waits only for the calling adapter's own writes
    tenant_a.clear(scope={"tenant": "b"})
    assert tenant_b.lookup("What is the capital of France?", "m") is None
    assert base.lookup("What is semcache?") is not None
    with pytest.raises(InvalidInputError):
        tenant_a.clear(llm_string="m")


def test_update_is_write_behind_with_read_your_writes():
    release = threading.Event()

    class SlowKV(SemanticKV):
        def put(self, *args, **kwargs):
            assert release.wait(timeout=10)
            return super().put(*args, **kwargs)

    cache = LangChainSemanticCache(SemanticCache(SlowKV(embedding=HashEmbedding(dim=64))))
    cache.update("What is the capital of France?", "m", [Generation(text="Paris")])  # returns while blocked
    assert cache.stats.stores == 0
    assert cache.lookup("What is the capital of France?", "m") == [Generation(text="Paris")]
    assert cache.stats.pending_hits == 1
    release.set()
    assert cache.flush(timeout=10) and cache.stats.stores == 1
    cache.close()


def test_failed_write_is_counted_and_logged(caplog):
    from semcache._engine.inputs import Limits

    cache = LangChainSemanticCache(
        SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64), limits=Limits(max_value_bytes=64)))
    )
    with caplog.at_level(logging.ERROR):
        cache.update("What is the capital of France?", "m", [Generation(text="Paris " * 50)])
        assert cache.flush(timeout=10)
    assert cache.stats.write_failures == 1
    assert cache.lookup("What is the capital of France?", "m") is None
    assert any("was not cached" in r.getMessage() for r in caplog.records)


def test_async_methods_do_not_block_the_event_loop():
    release = threading.Event()

    class SlowKV(SemanticKV):
        def search(self, *args, **kwargs):
            assert release.wait(timeout=10)
            return super().search(*args, **kwargs)

    cache = LangChainSemanticCache(SemanticCache(SlowKV(embedding=HashEmbedding(dim=64))))

    async def main() -> tuple[bool, object]:
        lookup = asyncio.ensure_future(cache.alookup("What is the capital of France?", "m"))
        await asyncio.sleep(0.05)
        loop_was_free = not lookup.done()  # the loop ran this coroutine while the lookup was blocked
        release.set()
        return loop_was_free, await lookup

    loop_was_free, result = asyncio.run(main())
    assert loop_was_free and result is None


def test_bad_arguments():
    with pytest.raises(ConfigurationError):
        LangChainSemanticCache(cache="not a cache")
    with pytest.raises(InvalidInputError):
        LangChainSemanticCache(threshold=2.0)
    with pytest.raises(InvalidInputError):
        new_cache().lookup(b"bytes", "m")


# -------------------------------------------------------------- end to end, ChatOpenAI
@pytest.fixture
def global_cache(minilm):
    lc_cache = LangChainSemanticCache(SemanticCache(SemanticKV(embedding=minilm)))
    set_llm_cache(lc_cache)
    yield lc_cache
    set_llm_cache(None)
    lc_cache.close()


def chat_model(server, model: str = "gpt-4o-mini", **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=server.base_url, api_key="test", max_retries=0, **kwargs)


def test_paraphrase_costs_one_upstream_call(server, global_cache):
    server.reset()
    llm = chat_model(server)
    first = llm.invoke("How do I reverse a list in Python?")
    assert global_cache.flush(timeout=30)  # a paraphrase is found once the store landed (an exact repeat before)
    second = llm.invoke("How can I reverse a Python list?")
    assert server.count("chat.completions") == 1
    assert second.content == first.content == fake_answer("gpt-4o-mini", "How do I reverse a list in Python?")
    assert global_cache.stats.hits == 1
    different = llm.invoke("How do I sort a list in Python?")
    assert different.content == fake_answer("gpt-4o-mini", "How do I sort a list in Python?")
    assert server.count("chat.completions") == 2


def test_different_model_or_temperature_costs_two(server, global_cache):
    server.reset()
    question = "What is the capital of France?"
    chat_model(server, "gpt-4o-mini").invoke(question)
    other = chat_model(server, "gpt-4o").invoke(question)
    assert other.content == fake_answer("gpt-4o", question)
    chat_model(server, "gpt-4o-mini", temperature=0.9).invoke(question)
    assert server.count("chat.completions") == 3
    chat_model(server, "gpt-4o").invoke(question)
    assert server.count("chat.completions") == 3


def test_multi_turn_needs_the_same_earlier_turns(server, global_cache):
    server.reset()
    llm = chat_model(server)
    follow_up = HumanMessage("What about its population?")
    france = [HumanMessage("What is the capital of France?"), AIMessage("Paris."), follow_up]
    japan = [HumanMessage("What is the capital of Japan?"), AIMessage("Tokyo."), follow_up]
    a = llm.invoke(france)
    b = llm.invoke(japan)
    assert a.content != b.content
    assert llm.invoke(france).content == a.content
    assert server.count("chat.completions") == 2


def test_system_prompt_is_part_of_the_scope(server, global_cache):
    server.reset()
    llm = chat_model(server)
    question = HumanMessage("What is the capital of France?")
    llm.invoke([SystemMessage("Answer in one word."), question])
    llm.invoke([SystemMessage("Answer at length."), question])
    llm.invoke([SystemMessage("Answer in one word."), question])
    assert server.count("chat.completions") == 2


def test_per_model_cache_argument(server, minilm):
    server.reset()
    set_llm_cache(None)
    own = LangChainSemanticCache(SemanticCache(SemanticKV(embedding=minilm)))
    cached = chat_model(server, cache=own)
    uncached = chat_model(server)
    cached.invoke("How do I reverse a list in Python?")
    assert own.flush(timeout=30)  # a paraphrase is found once the store landed
    cached.invoke("How can I reverse a Python list?")
    uncached.invoke("How do I reverse a list in Python?")
    uncached.invoke("How do I reverse a list in Python?")
    assert server.count("chat.completions") == 3
    assert own.stats.hits == 1
    own.close()


def test_async_invoke(server, global_cache):
    server.reset()
    llm = chat_model(server)

    async def main():
        first = await llm.ainvoke("What is the tallest mountain on Earth?")
        second = await llm.ainvoke("What is the tallest mountain on Earth?")
        return first, second

    first, second = asyncio.run(main())
    assert first.content == second.content
    assert server.count("chat.completions") == 1


def test_upstream_error_is_not_cached(server, global_cache):
    import openai

    server.reset()
    llm = chat_model(server)
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        llm.invoke("What is the capital of Peru?")
    assert llm.invoke("What is the capital of Peru?").content == fake_answer(
        "gpt-4o-mini", "What is the capital of Peru?"
    )
    assert server.count("chat.completions") == 2


def test_streaming_chat_model_result_is_cached(server, global_cache):
    server.reset()
    llm = chat_model(server, streaming=True)  # generates through the stream, caches the merged chunks
    first = llm.invoke("How do I reverse a list in Python?")
    assert global_cache.flush(timeout=30)  # a paraphrase is found once the store landed
    second = llm.invoke("How can I reverse a Python list?")
    assert second.content == first.content == fake_answer("gpt-4o-mini", "How do I reverse a list in Python?")
    assert server.count("chat.completions") == 1


def test_a_failing_cache_is_a_miss_not_an_error(server, hash_embedding):
    from semcache.errors import ShardUnavailableError

    class DownKV(SemanticKV):
        def search(self, *args, **kwargs):
            raise ShardUnavailableError("no replica of shard-1 answered", shard_id="shard-1")

    server.reset()
    down = LangChainSemanticCache(SemanticCache(DownKV(embedding=hash_embedding)))
    llm = chat_model(server, cache=down)
    question = "What is the capital of France?"
    assert llm.invoke(question).content == fake_answer("gpt-4o-mini", question)
    assert down.stats.lookup_errors == 1 and server.count("chat.completions") == 1
    down.close()
