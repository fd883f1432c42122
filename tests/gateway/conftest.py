"""A gateway process (real MiniLM) in front of the bundled OpenAI-compatible server, shared by a module's tests.

Each test keeps to its own ``x-semcache-namespace`` (the ``ns`` fixture), so
no test sees another's entries and every semantic lookup searches a handful of
entries only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway import GatewayProcess

from semcache.testing import FakeOpenAIServer

SLOW_SECONDS = 3.0
SLOW_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(latency=SLOW_SECONDS) as server:
        yield server


def upstream_tables(upstream: FakeOpenAIServer, slow: FakeOpenAIServer) -> list[dict[str, object]]:
    """A fast upstream for gpt-* and text-embedding-*, a slow one (timing out) for slow-*; no default."""
    return [
        {"name": "fast", "base_url": upstream.base_url, "models": ["gpt-", "text-embedding-"]},
        {"name": "slow", "base_url": slow.base_url, "models": ["slow-"], "timeout": SLOW_TIMEOUT},
    ]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIServer, slow_upstream: FakeOpenAIServer
) -> Iterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("gateway")
    with GatewayProcess(directory, upstream_tables(upstream, slow_upstream),
                        server={"max_body_bytes": 64 * 1024},
                        tenants={"beta": {"max_wrong_rate": "strict"}}) as process:
        yield process


@pytest.fixture
def ns() -> str:
    """A namespace of this test's own."""
    return "t" + uuid.uuid4().hex[:12]
