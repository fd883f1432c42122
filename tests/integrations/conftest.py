"""Fixtures shared by the adapter tests: the bundled OpenAI-compatible server and a real client on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from semcache.testing import FakeOpenAIServer


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    """One local server per test module, on 127.0.0.1; stopped when the module ends."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def raw_client(server: FakeOpenAIServer) -> Iterator[OpenAI]:
    """The real ``openai`` client against ``server``, whose counters start from zero."""
    server.reset()
    with OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
        yield client
