"""Test helpers shipped with semcache, usable by its users' test suites too.

* :class:`~semcache.testing.openai_server.FakeOpenAIServer`: a local
  OpenAI-compatible HTTP server (chat completions, streaming, tool calls,
  responses, embeddings) that counts its calls and can inject failures.
"""

from .openai_server import FakeOpenAIServer, fake_answer, fake_embedding

__all__ = ["FakeOpenAIServer", "fake_answer", "fake_embedding"]
