"""``semcache.integrations.openai`` with the real ``openai`` client against the bundled server."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from semcache.integrations.openai import (
    cache_info,
    chunks_to_completion,
    completion_to_chunks,
    is_cached,
    semantic_cache,
    wrap,
)

from semcache import SemanticCache, SemanticKV
from semcache._engine.inputs import Limits
from semcache.errors import ConfigurationError
from semcache.testing import FakeOpenAIServer, fake_answer

MODEL = "gpt-4o-mini"
QUESTION = "What is the capital of France?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def cache(make_cache):
    return make_cache()


@pytest.fixture
def client(raw_client, cache):
    wrapped = wrap(raw_client, cache=cache)
    yield wrapped
    wrapped.semcache.close()


def ask(client, text: str = QUESTION, **kwargs):
    return client.chat.completions.create(model=kwargs.pop("model", MODEL), messages=user(text), **kwargs)


def test_hit_is_a_marked_chat_completion_with_zero_usage(client, server):
    miss = ask(client)
    client.semcache.flush()
    hit = ask(client, "what is the capital of France")  # not exact: the semantic path
    assert server.count("chat.completions") == 1
    assert isinstance(hit, ChatCompletion)
    assert not is_cached(miss) and cache_info(miss) is None
    assert is_cached(hit) and cache_info(hit)["exact"] is False and cache_info(hit)["cached_prompt"] == QUESTION
    assert hit.choices[0].message.content == miss.choices[0].message.content == fake_answer(MODEL, QUESTION)
    assert miss.usage.total_tokens > 0
    assert (hit.usage.prompt_tokens, hit.usage.completion_tokens, hit.usage.total_tokens) == (0, 0, 0)
    assert hit.usage.completion_tokens_details is None  # same shape as upstream's: zeroed counts only
    assert client.semcache.stats.hits == 1 and client.semcache.stats.misses == 1


def test_write_behind_does_not_delay_the_caller_and_reads_its_writes(raw_client, server, hash_embedding):
    release = threading.Event()

    class SlowKV(SemanticKV):
        def put(self, *args, **kwargs):
            assert release.wait(timeout=10)
            return super().put(*args, **kwargs)

    cache = SemanticCache(SlowKV(embedding=hash_embedding))
    client = wrap(raw_client, cache=cache)
    first = ask(client)  # returns while the store is still blocked
    assert cache.stats.stores == 0
    second = ask(client)
    assert server.count("chat.completions") == 1
    assert is_cached(second) and client.semcache.stats.pending_hits == 1
    assert second.choices[0].message.content == first.choices[0].message.content
    release.set()
    assert client.semcache.flush(timeout=10)
    assert cache.stats.stores == 1 and cache.lookup(QUESTION, scope=None) is None  # stored under the request's scope
    assert is_cached(ask(client)) and client.semcache.stats.pending_hits == 1
    client.semcache.close()


def test_failed_write_is_counted_and_logged_not_served(raw_client, server, hash_embedding, caplog):
    tiny = SemanticCache(SemanticKV(embedding=hash_embedding, limits=Limits(max_value_bytes=64)))
    client = wrap(raw_client, cache=tiny)
    with caplog.at_level(logging.ERROR, logger="semcache.integrations.openai"):
        ask(client)
        assert client.semcache.flush(timeout=10)
    assert client.semcache.stats.write_failures == 1 and client.semcache.stats.stores == 0
    assert any("was not cached" in record.getMessage() for record in caplog.records)
    assert not is_cached(ask(client))
    assert server.count("chat.completions") == 2
    client.semcache.close()


def test_synchronous_writes_option(raw_client, cache, server):
    client = wrap(raw_client, cache=cache, write_behind=False)
    ask(client)
    assert cache.stats.stores == 1 and client.semcache.stats.pending_hits == 0
    assert is_cached(ask(client))


def test_model_and_parameters_partition_the_cache(client, server):
    ask(client)
    ask(client, model="gpt-4o")
    ask(client, max_tokens=5)
    ask(client, seed=7)
    ask(client, response_format={"type": "json_object"})
    assert server.count("chat.completions") == 5
    for kwargs in (
        {},
        {"model": "gpt-4o"},
        {"max_tokens": 5},
        {"seed": 7},
        {"response_format": {"type": "json_object"}},
    ):
        assert is_cached(ask(client, **kwargs))
    assert server.count("chat.completions") == 5


def test_transport_parameters_do_not_partition(client, server):
    ask(client, user="alice", timeout=30, extra_headers={"X-Trace": "1"})
    assert is_cached(ask(client, user="bob", metadata={"run": "2"}))
    assert server.count("chat.completions") == 1


def test_system_prompt_and_earlier_turns_must_match(client, server):
    follow_up = {"role": "user", "content": "What about its population?"}
    france = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Paris."}, follow_up]
    japan = [{"role": "user", "content": "What is the capital of Japan?"}, {"role": "assistant", "content": "Tokyo."}]
    first = client.chat.completions.create(model=MODEL, messages=france)
    second = client.chat.completions.create(model=MODEL, messages=[*japan, follow_up])
    assert not is_cached(second) and second.choices[0].message.content != first.choices[0].message.content
    brief = [{"role": "system", "content": "Answer in one word."}, *user(QUESTION)]
    verbose = [{"role": "system", "content": "Answer at length."}, *user(QUESTION)]
    assert not is_cached(client.chat.completions.create(model=MODEL, messages=brief))
    assert not is_cached(client.chat.completions.create(model=MODEL, messages=verbose))
    assert is_cached(client.chat.completions.create(model=MODEL, messages=france))
    assert server.count("chat.completions") == 4


def test_sampling_policy(raw_client, cache, server):
    default = wrap(raw_client, cache=cache)
    for _ in range(2):
        assert not is_cached(ask(default, temperature=0.7))
    assert default.semcache.stats.bypassed == 2
    assert not is_cached(ask(default, temperature=0))
    assert is_cached(ask(default, temperature=0))
    sampled = wrap(raw_client, cache=cache, sampling="all")
    ask(sampled, temperature=0.7)
    sampled.semcache.flush()
    assert is_cached(ask(sampled, temperature=0.7))
    assert not is_cached(ask(sampled, temperature=0.9))  # the temperature is part of the scope
    custom = wrap(raw_client, cache=cache, sampling=lambda request: request.get("seed") is not None)
    assert not is_cached(ask(custom, temperature=1.0))
    assert custom.semcache.stats.bypassed == 1
    with pytest.raises(ConfigurationError):
        wrap(raw_client, cache=cache, sampling="sometimes")


def test_cache_skip_and_refresh(client, server):
    ask(client)
    assert not is_cached(ask(client, cache_skip=True))
    refreshed = ask(client, cache_refresh=True)
    assert not is_cached(refreshed)
    assert client.semcache.stats.refreshes == 1
    assert "cache_skip" not in server.requests[-1] and "cache_refresh" not in server.requests[-1]
    assert is_cached(ask(client))
    assert server.count("chat.completions") == 3


def test_call_scope_partitions(client, server):
    ask(client, cache_scope={"tenant": "a"})
    assert not is_cached(ask(client, cache_scope={"tenant": "b"}))
    assert is_cached(ask(client, cache_scope={"tenant": "a"}))
    assert server.count("chat.completions") == 2


def test_upstream_errors_are_never_cached(client, server):
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client, "Explain caching [[error:500]]")
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert not is_cached(ask(client))
    assert server.count("chat.completions") == 4
    assert client.semcache.flush(timeout=10)
    assert client.semcache.stats.stores == 1  # only the answer that succeeded


def test_stream_miss_passes_through_then_hit_replays_same_shape(client, server):
    upstream = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert not any(is_cached(c) for c in upstream)
    client.semcache.flush()
    replay = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert server.count("chat.completions") == 1
    assert all(isinstance(c, ChatCompletionChunk) and is_cached(c) for c in replay)

    def shape(chunks):
        return [
            (sorted(c.choices[0].delta.model_dump(exclude_none=True)), c.choices[0].finish_reason)
            if c.choices
            else "usage"
            for c in chunks
        ]

    # The server cuts the text into pieces of its own (semcache.testing.openai_server.stream_chunks),
    # so the replay matches the upstream chunk kind by chunk kind, each run of text pieces taken once.
    def runs(chunks):
        return [kind for kind, _ in itertools.groupby(shape(chunks))]

    assert runs(replay) == runs(upstream)
    assert len(replay) != len(upstream)  # an independent oracle, not the adapter's own chunker
    text = "".join(c.choices[0].delta.content or "" for c in replay if c.choices)
    assert text == fake_answer(MODEL, QUESTION)
    assert replay[-1].usage.total_tokens == 0 and upstream[-1].usage.total_tokens > 0
    plain = ask(client)  # a streamed miss serves a plain request too
    assert is_cached(plain) and plain.choices[0].message.content == text


def test_plain_miss_serves_a_stream_hit_and_context_manager(client, server):
    ask(client)
    with ask(client, stream=True) as stream:
        chunks = list(stream)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop" and all(is_cached(c) for c in chunks)
    assert server.count("chat.completions") == 1


def test_broken_or_abandoned_stream_is_not_stored(client, server):
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in ask(client, "Tell me a story [[break-stream]]", stream=True):
            received.append(chunk)
    assert received and not any(is_cached(c) for c in received)  # passed through as they came, then the error
    stream = ask(client, "Tell me a long story", stream=True)
    next(iter(stream))
    stream.close()  # the caller stopped reading: incomplete
    client.semcache.flush()
    assert client.semcache.stats.streams_discarded == 2 and client.semcache.stats.stores == 0
    assert not is_cached(ask(client, "Tell me a long story"))
    assert server.count("chat.completions") == 3


def test_tool_calls_cached_and_replayed_as_deltas(client, server):
    question = "What is the weather in Paris?"
    first = ask(client, question, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    hit = ask(client, question, tools=TOOLS)
    assert is_cached(hit) and hit.choices[0].message.tool_calls[0].function.arguments == call.function.arguments
    assert hit.choices[0].finish_reason == "tool_calls"
    chunks = list(ask(client, question, tools=TOOLS, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert not is_cached(ask(client, question))  # without tools: another scope
    assert not is_cached(ask(client, question, tools=TOOLS, tool_choice="none"))
    tool_turn = [
        *user(question),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=tool_turn, tools=TOOLS)
    assert not is_cached(answer) and "sunny" in answer.choices[0].message.content
    other = [*tool_turn[:2], {"role": "tool", "tool_call_id": call.id, "content": "raining"}]
    assert (
        "raining" in client.chat.completions.create(model=MODEL, messages=other, tools=TOOLS).choices[0].message.content
    )
    assert server.count("chat.completions") == 5


def test_streamed_tool_call_miss_is_reassembled(client, server):
    question = "What is the weather in Rome?"
    list(ask(client, question, tools=TOOLS, stream=True))
    client.semcache.flush()
    hit = ask(client, question, tools=TOOLS)
    assert is_cached(hit)
    assert json.loads(hit.choices[0].message.tool_calls[0].function.arguments) == {"city": question}
    assert server.count("chat.completions") == 1


def test_async_client(server, cache):
    async def main():
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as raw:
            client = wrap(raw, cache=cache)
            first = await client.chat.completions.create(model=MODEL, messages=user(QUESTION))
            second = await client.chat.completions.create(model=MODEL, messages=user(QUESTION))
            stream = await client.chat.completions.create(model="gpt-4o", messages=user(QUESTION), stream=True)
            async with stream:
                streamed = [c async for c in stream]
            replay = await client.chat.completions.create(model="gpt-4o", messages=user(QUESTION), stream=True)
            replayed = [c async for c in replay]
            with pytest.raises(openai.APIConnectionError):
                broken = await client.chat.completions.create(
                    model=MODEL, messages=user("Story [[break-stream]]"), stream=True
                )
                async for _ in broken:
                    pass
            client.semcache.close()
            return first, second, streamed, replayed, client.semcache.stats

    server.reset()
    first, second, streamed, replayed, stats = asyncio.run(main())
    assert not is_cached(first) and is_cached(second)
    assert not any(is_cached(c) for c in streamed) and all(is_cached(c) for c in replayed)
    text = "".join(c.choices[0].delta.content or "" for c in replayed)
    assert text == fake_answer("gpt-4o", QUESTION)
    assert stats.streams_discarded == 1
    assert server.count("chat.completions") == 3


def test_responses_api(client, server):
    first = client.responses.create(model=MODEL, input=QUESTION, instructions="Be brief.")
    hit = client.responses.create(model=MODEL, input=QUESTION, instructions="Be brief.")
    other = client.responses.create(model=MODEL, input=QUESTION, instructions="Be verbose.")
    assert isinstance(hit, Response) and is_cached(hit) and not is_cached(other)
    assert hit.output_text == first.output_text and hit.usage.total_tokens == 0
    assert server.count("responses") == 2
    with pytest.raises(openai.BadRequestError):  # the bundled server does not stream responses: passed through
        client.responses.create(model=MODEL, input=QUESTION, instructions="Be brief.", stream=True)
    assert server.count("responses") == 3 and client.semcache.stats.bypassed == 1


def test_wrapped_client_passes_everything_else_through(client, server):
    vectors = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(vectors.data[0].embedding) == 1536
    assert client.base_url == OpenAI(base_url=server.base_url, api_key="t").base_url
    faster = client.with_options(timeout=5)
    ask(client)
    assert is_cached(ask(faster)) and faster.semcache is client.semcache
    with pytest.raises(ConfigurationError):
        wrap(object())


def test_decorator_over_a_create_call(raw_client, cache, server):
    @semantic_cache(cache=cache)
    def chat(model: str, messages: list, **kwargs):
        return raw_client.chat.completions.create(model=model, messages=messages, **kwargs)

    assert not is_cached(chat(MODEL, user(QUESTION)))
    assert is_cached(chat(MODEL, user(QUESTION)))
    assert not is_cached(chat("gpt-4o", user(QUESTION)))
    assert not is_cached(chat(MODEL, user(QUESTION), temperature=1.0))
    replay = list(chat(MODEL, user(QUESTION), stream=True))
    assert all(is_cached(c) for c in replay)
    assert chat.semcache.stats.hits == 2
    assert server.count("chat.completions") == 3


def test_decorator_returning_text_and_prompt_arg(raw_client, cache, server):
    @semantic_cache(cache=cache, scope={"app": "faq"})
    def answer(question: str, model: str = MODEL) -> str:
        reply = raw_client.chat.completions.create(model=model, messages=user(question))
        return reply.choices[0].message.content or ""

    @semantic_cache(cache=cache, scope={"app": "faq"}, prompt_arg="question")
    def shout(prefix: str, question: str) -> str:
        return prefix + answer(question, model="gpt-4o")

    assert answer(QUESTION) == answer(QUESTION) == fake_answer(MODEL, QUESTION)
    assert answer(QUESTION, model="gpt-4o") == fake_answer("gpt-4o", QUESTION)
    assert shout(">> ", QUESTION) == ">> " + fake_answer("gpt-4o", QUESTION)
    assert shout(">> ", QUESTION) == shout(">> ", QUESTION)
    assert server.count("chat.completions") == 2
    assert answer.semcache.stats.hits == 2 and shout.semcache.stats.hits == 2


def test_decorator_async(server, cache):
    async def main():
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as raw:

            @semantic_cache(cache=cache)
            async def chat(**kwargs):
                return await raw.chat.completions.create(**kwargs)

            first = await chat(model=MODEL, messages=user(QUESTION))
            second = await chat(model=MODEL, messages=user(QUESTION))
            stream = await chat(model=MODEL, messages=user(QUESTION), stream=True)
            return first, second, [c async for c in stream]

    server.reset()
    first, second, chunks = asyncio.run(main())
    assert not is_cached(first) and is_cached(second) and all(is_cached(c) for c in chunks)
    assert server.count("chat.completions") == 1


def test_requests_without_a_user_message_go_upstream(client, server):
    system_only = [{"role": "system", "content": "Say hello."}]
    for _ in range(2):
        assert not is_cached(client.chat.completions.create(model=MODEL, messages=system_only))
    assert client.semcache.stats.bypassed == 2 and server.count("chat.completions") == 2


def test_stream_shape_helpers_round_trip():
    completion = {
        "id": "c1",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "A b c."}, "finish_reason": "stop"},
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": "' + "y" * 40 + '"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    chunks = completion_to_chunks(completion, include_usage=True)
    again = chunks_to_completion(chunks)
    assert again["choices"][0]["message"]["content"] == "A b c."
    assert again["choices"][1]["message"]["tool_calls"] == completion["choices"][1]["message"]["tool_calls"]
    assert again["usage"] == completion["usage"]
    assert chunks_to_completion([]) is None


def test_paraphrase_hits_with_minilm(raw_client, server, minilm):
    with SemanticCache(SemanticKV(embedding=minilm)) as cache:
        client = wrap(raw_client, cache=cache)
        ask(client, "How do I reverse a list in Python?")
        client.semcache.flush()
        hit = ask(client, "How can I reverse a Python list?")
        miss = ask(client, "How do I sort a list in Python?")
        assert is_cached(hit) and 0.8 <= cache_info(hit)["similarity"] < 1.0
        assert not is_cached(miss)
        assert server.count("chat.completions") == 2
        client.semcache.close()


def test_decorated_method_with_excluded_client_argument(raw_client, cache, server):
    class Assistant:
        def __init__(self, model: str) -> None:
            self.model = model

        @semantic_cache(cache=cache, exclude_args=("self", "client"))
        def ask(self, client, question: str, *, model: str) -> str:
            reply = client.chat.completions.create(model=model, messages=user(question))
            return reply.choices[0].message.content or ""

    bot = Assistant(MODEL)
    assert bot.ask(raw_client, QUESTION, model=MODEL) == bot.ask(raw_client, QUESTION, model=MODEL)
    assert bot.ask(raw_client, QUESTION, model="gpt-4o") == fake_answer("gpt-4o", QUESTION)
    assert Assistant.ask.semcache.stats.hits == 1
    assert server.count("chat.completions") == 2


def test_arguments_that_are_not_json_bypass_with_one_warning(raw_client, cache, server, caplog):
    @semantic_cache(cache=cache)
    def ask(client, question: str) -> str:
        return client.chat.completions.create(model=MODEL, messages=user(question)).choices[0].message.content

    with caplog.at_level(logging.WARNING, logger="semcache.integrations.openai"):
        for _ in range(3):
            assert ask(raw_client, QUESTION) == fake_answer(MODEL, QUESTION)
    assert ask.semcache.stats.bypassed == 3 and server.count("chat.completions") == 3
    assert sum("not cacheable" in r.getMessage() for r in caplog.records) == 1


def test_text_result_with_stream_argument_is_not_treated_as_a_stream(cache):
    @semantic_cache(cache=cache, write_behind=False)
    def ask(question: str, stream: bool = False) -> str:
        return f"text for {question}"

    assert ask("What is semcache?", stream=True) == "text for What is semcache?"
    assert ask("What is semcache?", stream=True) == "text for What is semcache?"
    assert ask.semcache.stats.hits == 1 and ask.semcache.stats.streams_discarded == 0


def test_variadic_arguments_partition(cache):
    calls = []

    @semantic_cache(cache=cache, write_behind=False, prompt_arg="question")
    def ask(question: str, *tags: str) -> str:
        calls.append(tags)
        return f"{question} {tags}"

    ask("What is semcache?", "a")
    ask("What is semcache?", "b")
    ask("What is semcache?", "a")
    assert calls == [("a",), ("b",)]


def test_replayed_stream_has_openai_wire_shape(client, server):
    """Written out by hand from OpenAI's documented stream format, not derived from the code under test."""
    ask(client, "Weather in Oslo?", tools=TOOLS)
    ask(client)
    tool_chunks = [
        c.model_dump(exclude_none=True, exclude={"semcache"})
        for c in ask(client, "Weather in Oslo?", tools=TOOLS, stream=True)
    ]
    first = tool_chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and "content" not in first["delta"]
    (header,) = first["delta"]["tool_calls"]
    assert header["index"] == 0 and header["id"].startswith("call_") and header["type"] == "function"
    assert header["function"] == {"name": "get_weather", "arguments": ""}
    middle = [c["choices"][0]["delta"] for c in tool_chunks[1:-1]]
    assert middle and all(set(d) == {"tool_calls"} and set(d["tool_calls"][0]) == {"index", "function"} for d in middle)
    assert tool_chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    text_chunks = [c.model_dump(exclude_none=True, exclude={"semcache"}) for c in ask(client, stream=True)]
    assert text_chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in text_chunks[1:-1])
    assert text_chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert {c["object"] for c in text_chunks + tool_chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in text_chunks}) == 1
    assert server.count("chat.completions") == 2


def test_bare_decorator_uses_the_default_settings(monkeypatch, hash_embedding):
    import semcache.integrations._adapter as plumbing

    monkeypatch.setattr(plumbing, "default_cache", lambda: SemanticCache(SemanticKV(embedding=hash_embedding)))

    @semantic_cache
    def echo(question: str) -> str:
        return question.upper()

    assert echo("What is semcache?") == echo("What is semcache?") == "WHAT IS SEMCACHE?"
    assert echo.semcache.stats.hits == 1 and echo.semcache.stats.misses == 1


def test_tool_call_ids_and_empty_fields_in_history_do_not_matter(client, server):
    def conversation(call_id: str, **extra) -> list[dict]:
        call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        return [
            *user("Weather in Oslo?"),
            {"role": "assistant", "content": None, "tool_calls": [call], **extra},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ]

    first = client.chat.completions.create(model=MODEL, messages=conversation("call_1"), tools=TOOLS)
    again = client.chat.completions.create(model=MODEL, messages=conversation("call_2", refusal=None), tools=TOOLS)
    assert not is_cached(first) and is_cached(again)
    assert server.count("chat.completions") == 1


def test_a_failing_cache_never_fails_the_model_call(raw_client, server, hash_embedding, caplog):
    from semcache.errors import ShardUnavailableError

    class DownKV(SemanticKV):
        def search(self, *args, **kwargs):
            raise ShardUnavailableError("no replica of shard-1 answered", shard_id="shard-1")

    client = wrap(raw_client, cache=SemanticCache(DownKV(embedding=hash_embedding)))
    with caplog.at_level(logging.WARNING, logger="semcache.integrations.openai"):
        reply = ask(client)
    assert reply.choices[0].message.content == fake_answer(MODEL, QUESTION) and not is_cached(reply)
    assert client.semcache.stats.lookup_errors == 1
    assert any("ShardUnavailableError" in r.getMessage() for r in caplog.records)
    healthy = wrap(raw_client, cache=SemanticCache(SemanticKV(embedding=hash_embedding)))
    too_long = "why " * 9000  # over the embedder's 32,768 characters
    assert not is_cached(ask(healthy, too_long)) and healthy.semcache.stats.lookup_errors == 1
    healthy.semcache.close()
    client.semcache.close()


def test_a_stream_of_other_things_passes_through_uncached(cache):
    @semantic_cache(cache=cache)
    def tokens(question: str, stream: bool = True):
        yield from question.split()

    assert list(tokens("What is semcache?", stream=True)) == ["What", "is", "semcache?"]
    assert list(tokens("What is semcache?", stream=True)) == ["What", "is", "semcache?"]
    assert tokens.semcache.stats.streams_discarded == 2 and tokens.semcache.stats.hits == 0


def test_identical_concurrent_misses_make_one_upstream_call(hash_embedding):
    from concurrent.futures import ThreadPoolExecutor

    with FakeOpenAIServer(latency=0.5) as slow, OpenAI(base_url=slow.base_url, api_key="t", max_retries=0) as raw:
        client = wrap(raw, cache=SemanticCache(SemanticKV(embedding=hash_embedding)))
        with ThreadPoolExecutor(max_workers=6) as pool:
            replies = list(pool.map(lambda _: ask(client), range(6)))
        assert slow.count("chat.completions") == 1
        assert len({r.choices[0].message.content for r in replies}) == 1
        stats = client.semcache.stats
        assert stats.misses == 1 and stats.hits == 5
        assert stats.single_flight_waits + stats.pending_hits >= 1
        slow.fail_next(500)  # a failed leader: each waiter makes its own call
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = list(pool.map(lambda _: _outcome(lambda: ask(client, "Another question?")), range(3)))
        assert outcomes.count("error") == 1 and outcomes.count("ok") == 2
        client.semcache.close()


def _outcome(call) -> str:
    try:
        call()
        return "ok"
    except openai.InternalServerError:
        return "error"


def test_identical_concurrent_async_misses_make_one_upstream_call(hash_embedding):
    async def main(base_url: str):
        async with AsyncOpenAI(base_url=base_url, api_key="t", max_retries=0) as raw:
            client = wrap(raw, cache=SemanticCache(SemanticKV(embedding=hash_embedding)))
            replies = await asyncio.gather(
                *(client.chat.completions.create(model=MODEL, messages=user(QUESTION)) for _ in range(5))
            )
            client.semcache.close()
            return replies, client.semcache.stats

    with FakeOpenAIServer(latency=0.5) as slow:
        replies, stats = asyncio.run(main(slow.base_url))
        assert slow.count("chat.completions") == 1
    assert sum(is_cached(r) for r in replies) == 4 and stats.misses == 1
