"""semcache as LangChain's LLM cache, with ``ChatOpenAI``.

Run: ``python examples/langchain_chat.py``.  With ``OPENAI_API_KEY`` set it
talks to OpenAI; without it, it starts semcache's bundled OpenAI-compatible
server on 127.0.0.1, so it runs offline.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model is packaged: never download

from langchain_core.globals import set_llm_cache  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from semcache.integrations.langchain import LangChainSemanticCache  # noqa: E402

from semcache import SemanticCache  # noqa: E402
from semcache.testing import openai_endpoint  # noqa: E402


def main() -> None:
    cache = SemanticCache()  # embedded, all-MiniLM-L6-v2
    cache.embedding.embed(["warm-up"])  # load the model now, not inside the first timed call
    lc_cache = LangChainSemanticCache(cache)
    set_llm_cache(lc_cache)  # every LangChain model now goes through semcache
    with openai_endpoint() as endpoint:
        print(endpoint.describe())

        def model(name: str) -> ChatOpenAI:
            return ChatOpenAI(model=name, temperature=0, base_url=endpoint.base_url, api_key=endpoint.api_key)

        def ask(llm: ChatOpenAI, prompt: str | list, label: str) -> None:
            hits = lc_cache.stats.hits
            start = time.perf_counter()
            answer = llm.invoke(prompt)
            outcome = "HIT " if lc_cache.stats.hits > hits else "MISS"
            print(f"{outcome} {time.perf_counter() - start:6.3f}s  {label:<42} -> {str(answer.content)[:50]!r}")

        mini, big = model("gpt-4o-mini"), model("gpt-4o")
        ask(mini, "How do I reverse a list in Python?", "gpt-4o-mini: reverse a list")
        ask(mini, "How can I reverse a Python list?", "gpt-4o-mini: paraphrase")
        ask(big, "How can I reverse a Python list?", "gpt-4o: same question, other model")

        # Multi-turn: the earlier turns must match, so the follow-up does not cross conversations.
        follow_up = HumanMessage("What about its population?")
        france = [HumanMessage("What is the capital of France?"), AIMessage("Paris."), follow_up]
        japan = [HumanMessage("What is the capital of Japan?"), AIMessage("Tokyo."), follow_up]
        ask(mini, france, "follow-up after France")
        ask(mini, japan, "follow-up after Japan")
        ask(mini, france, "follow-up after France, again")

        if endpoint.server is not None:
            print(f"upstream calls: {endpoint.server.count('chat.completions')}")
    set_llm_cache(None)
    lc_cache.close()


if __name__ == "__main__":
    main()
