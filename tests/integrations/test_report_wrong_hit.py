"""Both adapters let a user report a wrong hit without digging out internals: deleted, counted, recorded."""

from __future__ import annotations

import pytest
from langchain_core.outputs import Generation
from semcache.integrations.langchain import LangChainSemanticCache
from semcache.integrations.openai import is_cached, semantic_cache, wrap

from semcache import InvalidInputError, SemanticCache, SemanticKV
from semcache.embeddings import HashEmbedding


def _cache() -> SemanticCache:
    return SemanticCache(SemanticKV(embedding=HashEmbedding(dim=128), purge_interval=3600), threshold=0.8)


def _ask(client, question: str):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])


def test_a_wrapped_openai_hit_is_reported_from_the_reply_itself(raw_client):
    cache = _cache()
    client = wrap(raw_client, cache=cache)
    _ask(client, "what colour is the sky on a clear day")
    client.semcache.flush()
    reply = _ask(client, "What colour is the sky on a clear day?")
    assert is_cached(reply)
    assert client.semcache.report_wrong_hit(reply) is True
    assert not is_cached(_ask(client, "What colour is the sky on a clear day?"))  # deleted: asked upstream again
    (report,) = cache.reports()
    assert report.prompt == "What colour is the sky on a clear day?"
    assert report.cached_prompt == "what colour is the sky on a clear day"
    assert cache.stats.wrong_hits_reported == 1
    with pytest.raises(InvalidInputError, match="served from the cache"):
        client.semcache.report_wrong_hit(_ask(client, "a question never asked before"))


def test_a_decorated_function_reports_the_last_hit_it_served(raw_client):
    cache = _cache()

    @semantic_cache(cache=cache, write_behind=False)
    def ask(question: str) -> str:
        return _ask(raw_client, question).choices[0].message.content or ""

    ask("how tall is mount everest in metres")
    ask("How tall is Mount Everest in metres?")  # a hit, returned as a plain str
    assert ask.semcache.report_wrong_hit() is True
    assert cache.reports()[0].prompt == "How tall is Mount Everest in metres?"


def test_a_langchain_hit_is_reported_by_its_prompt_and_llm_string():
    cache = _cache()
    lc = LangChainSemanticCache(cache, write_behind=False)
    lc.update("what is the boiling point of water", "model=a", [Generation(text="100 C")])
    assert lc.lookup("What is the boiling point of water?", "model=a") is not None
    assert lc.report_wrong_hit("What is the boiling point of water?", "model=a") is True
    assert lc.lookup("What is the boiling point of water?", "model=a") is None
    assert lc.report_wrong_hit("What is the boiling point of water?", "model=a") is False  # nothing left to report
    assert [r.prompt for r in lc.cache.reports()] == ["What is the boiling point of water?"]
