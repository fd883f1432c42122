"""The bundled OpenAI-compatible server, driven by the real ``openai`` client."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from semcache.testing import fake_answer, fake_embedding

USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def client(server):
    server.reset()
    with OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
        yield client


def test_base_url_binds_loopback(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    assert server.port > 0


def test_chat_completion_is_deterministic_and_counted(client, server):
    first = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    other = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert isinstance(first, ChatCompletion)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content == fake_answer("gpt-4o-mini", USER[0]["content"])
    assert other.choices[0].message.content != first.choices[0].message.content
    assert first.id != second.id
    assert server.count("chat.completions") == 3
    assert server.count("chat.completions", model="gpt-4o-mini") == 2
    assert server.count(model="gpt-4o") == 1
    assert server.requests[0]["messages"] == USER


def test_history_changes_the_answer(client):
    follow_up = {"role": "user", "content": "What about its population?"}
    france = [*USER, {"role": "assistant", "content": "Paris"}, follow_up]
    japan = [{"role": "user", "content": "Capital of Japan?"}, {"role": "assistant", "content": "Tokyo"}, follow_up]
    a = client.chat.completions.create(model="m", messages=france).choices[0].message.content
    b = client.chat.completions.create(model="m", messages=japan).choices[0].message.content
    assert a != b


def test_stream_reassembles_to_the_plain_answer(client):
    chunks = list(
        client.chat.completions.create(model="m", messages=USER, stream=True, stream_options={"include_usage": True})
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake_answer("m", USER[0]["content"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_tool_call_plain_and_streamed(client):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Weather in Paris?"}
    chunks = list(client.chat.completions.create(model="m", messages=messages, tools=TOOLS, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    tool_turn = [
        *messages,
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = client.chat.completions.create(model="m", messages=tool_turn, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop" and "sunny" in final.choices[0].message.content


def test_injected_errors(client, server):
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "boom [[error:500]]"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "bad [[error:400]]"}])
    server.fail_next(503)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER)
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert server.count("chat.completions") == 4


def test_broken_stream_raises_after_first_chunks(client, server):
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "tell me [[break-stream]]"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert 0 < len(received) < 4
    server.break_streams = True
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model="m", messages=USER, stream=True))


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(model="text-embedding-3-small", input="a b c", encoding_format="float")
    packed = client.embeddings.create(model="text-embedding-3-small", input=["a b c", "a b d"])
    assert len(floats.data[0].embedding) == 1536
    assert np.allclose(floats.data[0].embedding, packed.data[0].embedding, atol=1e-6)
    assert np.allclose(packed.data[0].embedding, fake_embedding("a b c"), atol=1e-6)
    short = client.embeddings.create(model="text-embedding-3-small", input=["x"], dimensions=16)
    assert len(short.data[0].embedding) == 16
    a, b = (np.asarray(d.embedding) for d in packed.data)
    assert 0.3 < float(a @ b) < 0.99  # shared words: similar, not equal


def test_responses_endpoint(client):
    reply = client.responses.create(model="gpt-4o", input="hello", instructions="be brief")
    assert reply.output_text == fake_answer("gpt-4o", "hello", "system: be brief")


def test_async_client_and_stream(server):
    async def main() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            plain = await client.chat.completions.create(model="m", messages=USER)
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return plain.choices[0].message.content or "", text

    plain, streamed = asyncio.run(main())
    assert plain == streamed == fake_answer("m", USER[0]["content"])


def test_langchain_chat_openai_talks_to_it(server):
    from langchain_openai import ChatOpenAI

    server.reset()
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url, api_key="test", max_retries=0)
    question = "What is the capital of France?"
    assert llm.invoke(question).content == fake_answer("gpt-4o-mini", question)
    assert "".join(str(c.content) for c in llm.stream(question)) == fake_answer("gpt-4o-mini", question)
    assert server.count("chat.completions", model="gpt-4o-mini") == 2


def test_reset_and_unknown_route(client, server):
    client.chat.completions.create(model="m", messages=USER)
    server.fail_next(500, times=3)
    server.reset()
    assert server.count() == 0
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.post("/nowhere", cast_to=object, body={})
