"""Adapters that expose semcache to LLM frameworks; installed as ``semcache.integrations``.

* :mod:`semcache.integrations.langchain`: a LangChain ``BaseCache``.
* :mod:`semcache.integrations.openai`: ``@semantic_cache`` and ``wrap(client)`` for the OpenAI client.
"""
