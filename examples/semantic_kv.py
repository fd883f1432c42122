"""The Semantic KV quickstart, embedded: a key-value store you can search by meaning.

Run: ``python examples/semantic_kv.py``.  The last part caches LLM answers
with :class:`~semcache.SemanticCache`: with ``OPENAI_API_KEY`` set it asks
OpenAI; without it, semcache's bundled OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model is packaged: never download

from openai import OpenAI  # noqa: E402

from semcache import SemanticCache, SemanticKV  # noqa: E402
from semcache.testing import openai_endpoint  # noqa: E402


def main() -> None:
    with SemanticKV() as kv:  # in memory, all-MiniLM-L6-v2; SemanticKV("data/") persists
        # Store data like a normal KV store...
        kv.put("doc:readme", b"How to install and configure the system")
        kv.put("doc:api", b"REST API endpoints and authentication")
        kv.put("doc:deploy", b"Kubernetes deployment guide")
        print("get doc:readme ->", kv.get("doc:readme"))

        # ...but search by meaning, not just keys.
        for key, value, similarity, node in kv.search("how to set up authentication", top_k=2):
            print(f"search {similarity:.2f} | {key}: {value[:40]!r} ({node})")

        # Convenience methods.
        kv.put_string("config:host", "localhost")
        kv.put_json("metrics:cpu", {"value": 45.2, "unit": "percent"})
        print("get_string config:host ->", kv.get_string("config:host"))
        print("get_json metrics:cpu ->", kv.get_json("metrics:cpu"))
        print("exists config:host ->", kv.exists("config:host"), "| scan config: ->", kv.scan(prefix="config:"))
        kv.delete("config:host")
        print("after delete, exists ->", kv.exists("config:host"))

        # Semantic caching of LLM answers on the same engine.
        cache = SemanticCache(kv)
        with openai_endpoint() as endpoint:
            print(endpoint.describe())
            client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key)
            scope = {"model": "gpt-4o-mini", "temperature": 0}
            for question in (
                "How do I reset my password?",
                "How can I reset my password?",
                "How do I delete my account?",
            ):
                called = []

                def ask_llm(question: str = question, called: list = called) -> str:
                    called.append(True)
                    reply = client.chat.completions.create(
                        model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": question}]
                    )
                    return reply.choices[0].message.content or ""

                answer = cache.get_or_compute(question, ask_llm, scope=scope)
                print(f"{'MISS' if called else 'HIT '} {question!r} -> {answer[:50]!r}")
            if endpoint.server is not None:
                print(f"upstream calls: {endpoint.server.count('chat.completions')}")


if __name__ == "__main__":
    main()
