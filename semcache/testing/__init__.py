"""Test helpers shipped with semcache, usable by its users' test suites too.

* :class:`~semcache.testing.openai_server.FakeOpenAIServer`: a local
  OpenAI-compatible HTTP server (chat completions, streaming, tool calls,
  responses, embeddings) that counts its calls and can inject failures.
* :func:`~semcache.testing.openai_server.openai_endpoint`: OpenAI itself when
  ``OPENAI_API_KEY`` is set, else the bundled server (what the examples use).
* :func:`demo_gateway`: ``semcache serve --demo`` inside this process (needs the
  ``gateway`` extra), for tests and examples that point an OpenAI client at the gateway.
"""

from contextlib import AbstractContextManager
from typing import Any

from semcache.testing.openai_server import Endpoint, FakeOpenAIServer, fake_answer, fake_embedding, openai_endpoint

__all__ = ["Endpoint", "FakeOpenAIServer", "demo_gateway", "fake_answer", "fake_embedding", "openai_endpoint"]


def demo_gateway(*, embedding: str | None = None) -> AbstractContextManager[Any]:
    """The demo gateway (``semcache serve --demo``) in a background thread of this process.

    It serves on a free port of 127.0.0.1, with the bundled
    :class:`FakeOpenAIServer` upstream and two tenants, ``alpha`` and ``beta``;
    the context yields an object with ``base_url`` (``http://127.0.0.1:PORT/v1``),
    ``keys`` (tenant name to key) and ``admin_key``.

    Args:
        embedding: the model (default: the packaged all-MiniLM-L6-v2; ``"hash:DIM"`` for fast tests).

    Raises:
        MissingDependencyError: the ``gateway`` extra is not installed.
    """
    from semcache.errors import missing_extra

    try:
        from semcache._gateway.server import demo_gateway as run_demo
    except ImportError as exc:
        raise missing_extra(exc.name or "starlette", "gateway", "the demo gateway") from exc
    return run_demo(embedding=embedding)
