"""Cache OpenAI calls by meaning: ``@semantic_cache`` and ``wrap(client)``.

Run: ``python examples/openai_decorator.py``.  With ``OPENAI_API_KEY`` set it
talks to OpenAI; without it, it starts semcache's bundled OpenAI-compatible
server on 127.0.0.1, so it runs offline.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model is packaged: never download

from openai import OpenAI  # noqa: E402
from semcache.integrations.openai import cache_info, semantic_cache, wrap  # noqa: E402

from semcache import SemanticCache  # noqa: E402
from semcache.testing import openai_endpoint  # noqa: E402

MODEL = "gpt-4o-mini"


def main() -> None:
    cache = SemanticCache()  # embedded, all-MiniLM-L6-v2
    cache.embedding.embed(["warm-up"])  # load the model now, not inside the first timed call
    with openai_endpoint() as endpoint:
        print(endpoint.describe())
        client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key)

        # 1. The decorator: the function's arguments are the request.
        @semantic_cache(cache=cache)
        def ask(question: str, model: str = MODEL) -> str:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], temperature=0
            )
            return reply.choices[0].message.content or ""

        for question in (
            "How do I reverse a list in Python?",
            "How can I reverse a Python list?",  # a paraphrase: served from the cache
            "How do I sort a list in Python?",  # another question: goes upstream
        ):
            hits = ask.semcache.stats.hits
            start = time.perf_counter()
            answer = ask(question)
            label = "HIT " if ask.semcache.stats.hits > hits else "MISS"
            print(f"decorator {label} {time.perf_counter() - start:6.3f}s  {question!r} -> {answer[:60]!r}")

        # 2. wrap(client): chat.completions.create is cached; hits are marked ChatCompletions.
        cached_client = wrap(client, cache=cache)
        for question in ("What is the capital of France?", "what's the capital of france"):
            reply = cached_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}])
            info = cache_info(reply)
            if info:
                similar = f"similar to {info['cached_prompt']!r} ({info['similarity']:.2f})"
                detail = f"{similar}, usage {reply.usage.total_tokens}"
            else:
                detail = f"usage {reply.usage.total_tokens if reply.usage else '?'}"
            print(f"wrap      {'HIT ' if info else 'MISS'} {question!r}: {detail}")

        # A stream=True hit replays as ChatCompletionChunk objects.
        stream = cached_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True
        )
        chunks = list(stream)
        label = "HIT " if cache_info(chunks[0]) else "MISS"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        print(f"stream    {label} {len(chunks)} chunks: {text[:60]!r}")

        if endpoint.server is not None:
            print(f"upstream calls: {endpoint.server.count('chat.completions')}")
        cached_client.semcache.flush()
        ask.semcache.flush()


if __name__ == "__main__":
    main()
