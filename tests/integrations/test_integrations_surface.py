"""The adapters' public names change only on purpose."""

from __future__ import annotations

import semcache.integrations.langchain as langchain_adapter
import semcache.integrations.openai as openai_adapter

import semcache.testing as testing


def test_openai_adapter_exports():
    assert sorted(openai_adapter.__all__) == [
        "OpenAICache",
        "OpenAICacheStats",
        "UNSCOPED_PARAMS",
        "cache_info",
        "chunks_to_completion",
        "completion_to_chunks",
        "is_cached",
        "semantic_cache",
        "wrap",
    ]
    assert all(hasattr(openai_adapter, name) for name in openai_adapter.__all__)


def test_langchain_adapter_exports():
    assert sorted(langchain_adapter.__all__) == ["LangChainCacheStats", "LangChainSemanticCache", "conversation_of"]
    assert all(hasattr(langchain_adapter, name) for name in langchain_adapter.__all__)


def test_testing_exports():
    assert sorted(testing.__all__) == [
        "Endpoint",
        "FakeOpenAIServer",
        "demo_gateway",
        "fake_answer",
        "fake_embedding",
        "openai_endpoint",
    ]
    assert all(hasattr(testing, name) for name in testing.__all__)
