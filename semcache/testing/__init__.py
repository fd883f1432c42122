"""Test helpers shipped with semcache, usable by its users' test suites too.

* :class:`~semcache.testing.openai_server.FakeOpenAIServer`: a local
  OpenAI-compatible HTTP server (chat completions, streaming, tool calls,
  responses, embeddings) that counts its calls and can inject failures.
* :func:`~semcache.testing.openai_server.openai_endpoint`: OpenAI itself when
  ``OPENAI_API_KEY`` is set, else the bundled server (what the examples use).
"""

from semcache.testing.openai_server import Endpoint, FakeOpenAIServer, fake_answer, fake_embedding, openai_endpoint

__all__ = ["Endpoint", "FakeOpenAIServer", "fake_answer", "fake_embedding", "openai_endpoint"]
