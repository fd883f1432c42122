"""64 concurrent clients, two tenants, streamed and plain requests, hits and misses: nothing lost or mixed up.

Bounded in time by the clients' timeouts and the rounds, never timed.  Memory
is read from the gateway's /proc status after a warm-up round and after more
rounds of the same load: it must stay flat (well under what keeping each
request would cost).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import GatewayProcess

from semcache.testing import fake_answer

# Real gateway processes with the real model: not in the quick loop.
pytestmark = [pytest.mark.slow, pytest.mark.model]

MODEL = "gpt-4o-mini"
CLIENTS = 64
REQUESTS_PER_CLIENT = 8
QUESTIONS = 12  # per tenant: repeated across clients, so most requests after the first round are hits


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def question(tenant: str, n: int) -> str:
    return f"For team {tenant}: what is item number {n} on checklist {n * 7 + 3}?"


async def one(client: httpx.AsyncClient, gateway: GatewayProcess, tenant: str, prompt: str, stream: bool) -> str:
    """Ask, check the answer is this prompt's (and a hit is this tenant's); the cache outcome."""
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    headers = {"authorization": f"Bearer {gateway.keys[tenant]}"}
    async with client.stream("POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        raw = (await response.aread()).decode()
    if stream:
        events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        marker = chunks[0].get("semcache")
    else:
        answer = json.loads(raw)
        text, marker = answer["choices"][0]["message"]["content"], answer.get("semcache")
    assert text == fake_answer(MODEL, prompt)
    if marker is not None:  # a hit: the entry is this tenant's, stored for this very prompt
        assert marker["key"].startswith(f"gw.{tenant}.") and marker["cached_prompt"] == prompt
    return response.headers["x-semcache"]


async def round_of_load(gateway: GatewayProcess) -> list[str]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as client:
        async def worker(i: int) -> list[str]:
            tenant = ("alpha", "beta")[i % 2]
            return [await one(client, gateway, tenant, question(tenant, (i + j) % QUESTIONS), stream=(i + j) % 3 == 0)
                    for j in range(REQUESTS_PER_CLIENT)]

        results = await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    return [outcome for result in results for outcome in result]


def test_64_concurrent_clients_get_their_own_answers_and_memory_stays_flat(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    first = asyncio.run(round_of_load(gateway))
    assert len(first) == CLIENTS * REQUESTS_PER_CLIENT
    warm = rss_bytes(gateway.process.pid)
    later = [asyncio.run(round_of_load(gateway)) for _ in range(3)]
    assert all(len(outcomes) == CLIENTS * REQUESTS_PER_CLIENT for outcomes in later)
    assert "hit" in later[-1]
    grown = rss_bytes(gateway.process.pid) - warm
    # 1,536 more requests: keeping even 50 KB of each would add 75 MB.
    assert grown < 40 * 1024 * 1024, f"the gateway grew by {grown / 2**20:.1f} MiB over 3 rounds"
    stats = gateway.stats()["totals"]
    assert stats["errors"] == 0
