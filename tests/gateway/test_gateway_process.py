"""The gateway's life as a process: the offline demo, SIGTERM with work in flight, a cluster backend that fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from support.gateway import GatewayProcess
from support.harness import ClusterHarness
from support.wait import WAIT, wait_until

from semcache import SemanticKV
from semcache.testing import FakeOpenAIServer, fake_answer

# Real gateway processes with the real model: not in the quick loop.
pytestmark = [pytest.mark.slow, pytest.mark.model]

MODEL = "gpt-4o-mini"


def ask(base_url: str, key: str, prompt: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", timeout=timeout,
                      json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
                      headers={"authorization": f"Bearer {key}"})


def test_the_demo_prints_its_keys_and_serves_offline(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "semcache", "serve", "--demo", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        url = wait_until(lambda: next((m.group(1) for line in list(lines)
                                       if (m := re.search(r"listening on (\S+)", line))), None),
                         WAIT * 2, what="the demo to listen")
        keys = dict(re.findall(r"^tenant (\w+) key (\S+)$", "".join(lines), re.M))
        admin = re.search(r"^admin key (\S+)$", "".join(lines), re.M)
        assert set(keys) == {"alpha", "beta"} and admin is not None
        answer = ask(f"{url}/v1", keys["alpha"], "Hello there")
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == fake_answer(MODEL, "Hello there")
        stats = httpx.get(f"{url}/admin/stats", headers={"authorization": f"Bearer {admin.group(1)}"})
        assert stats.json()["totals"]["requests"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        reader.join(10)
        if process.stdout is not None:
            process.stdout.close()


def test_sigterm_finishes_the_request_in_flight_and_its_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with FakeOpenAIServer(latency=1.5) as upstream:
        gateway = GatewayProcess(tmp_path, [{"name": "up", "base_url": upstream.base_url}],
                                 cache={"path": str(store), "embedding": "hash:64"}).start()
        try:
            answers: list[httpx.Response] = []
            request = threading.Thread(target=lambda: answers.append(
                ask(gateway.base_url, gateway.keys["alpha"], "A slow question")))
            request.start()
            wait_until(lambda: upstream.count("chat.completions") == 1, what="the request to reach the upstream")
            assert gateway.process is not None
            gateway.process.send_signal(signal.SIGTERM)
            request.join(WAIT)
            assert gateway.process.wait(WAIT) == 0
        finally:
            gateway.terminate()
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["choices"][0]["message"]["content"] == fake_answer(MODEL, "A slow question")
    with SemanticKV(store, embedding="hash:64") as kv:
        assert kv.stats()["entries"] == 1  # the answer's store landed before the exit


def test_a_cluster_backend_serves_and_a_failing_one_never_fails_a_call(tmp_path: Path) -> None:
    with ClusterHarness(tmp_path / "cluster", shards=2, replicas=1) as cluster, FakeOpenAIServer() as upstream:
        cluster.start()
        gateway = GatewayProcess(tmp_path, [{"name": "up", "base_url": upstream.base_url}],
                                 cache={"cluster": str(cluster.local.config_path)}).start()
        try:
            key = gateway.keys["alpha"]
            assert ask(gateway.base_url, key, "Where is the Louvre?").headers["x-semcache"] == "miss"
            wait_until(lambda: ask(gateway.base_url, key, "Where is the Louvre?").headers["x-semcache"] == "hit",
                       what="a hit from the cluster")
            cluster.stop_all()
            down = ask(gateway.base_url, key, "Where is the Louvre?", timeout=120)
            assert down.status_code == 200 and down.headers["x-semcache"] == "bypass"
            assert down.json()["choices"][0]["message"]["content"] == fake_answer(MODEL, "Where is the Louvre?")
            assert gateway.stats()["totals"]["bypasses"] >= 1
        finally:
            gateway.terminate()


def test_pass_through_forwards_the_clients_key_and_keeps_its_tenant_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMCACHE_TEST_UPSTREAM_KEY", "sk-upstream-of-the-gateway")
    with FakeOpenAIServer() as upstream:
        table = {"name": "up", "base_url": upstream.base_url, "api_key_env": "SEMCACHE_TEST_UPSTREAM_KEY"}
        with GatewayProcess(tmp_path, [table], cache={"embedding": "hash:64"},
                            passthrough={"enabled": True}) as gateway:
            assert ask(gateway.base_url, gateway.keys["alpha"], "Tell me about otters").status_code == 200
            assert upstream.authorizations[-1] == "Bearer sk-upstream-of-the-gateway"  # a tenant: the gateway's key
            first = ask(gateway.base_url, "sk-user-one", "Tell me about otters")
            assert first.headers["x-semcache"] == "miss"  # another tenant: alpha's entry is not served
            assert upstream.authorizations[-1] == "Bearer sk-user-one"  # pass-through: the client's own key
            wait_until(lambda: ask(gateway.base_url, "sk-user-one", "Tell me about otters").headers["x-semcache"]
                       == "hit", what="the pass-through tenant's hit")
            assert ask(gateway.base_url, "sk-user-two", "Tell me about otters").headers["x-semcache"] == "miss"
            assert "sk-user-one" not in (tmp_path / "gateway.log").read_text()  # keys are never logged


def test_a_speculative_tenant_races_the_upstream_against_the_lookup(tmp_path: Path) -> None:
    # The upstream takes 10 s: far longer than any lookup, so the lookup wins the race on a hit.
    with FakeOpenAIServer(latency=10.0) as upstream, GatewayProcess(
        tmp_path, [{"name": "up", "base_url": upstream.base_url}], tenants={"alpha": {"speculative_upstream": True}}
    ) as gateway:
        key = gateway.keys["alpha"]
        first = ask(gateway.base_url, key, "What is the capital of Japan?")
        assert first.headers["x-semcache"] == "miss"
        assert first.json()["choices"][0]["message"]["content"] == fake_answer(MODEL,
                                                                               "What is the capital of Japan?")
        wait_until(lambda: ask(gateway.base_url, key, "What is the capital of Japan?").headers["x-semcache"]
                   == "hit", what="the answer stored")
        calls = upstream.count("chat.completions")
        assert ask(gateway.base_url, key, "What is the capital of Japan?").headers["x-semcache"] == "hit"
        assert upstream.count("chat.completions") == calls  # an exact hit is answered before any upstream call
        hit = ask(gateway.base_url, key, "what's the capital of japan")
        # Served from the cache; the upstream call started beside the lookup was cancelled (whether it had
        # reached the upstream by then depends on timing, so it is not asserted).
        assert hit.headers["x-semcache"] == "hit"
        assert hit.json()["choices"][0]["message"]["content"] == fake_answer(MODEL, "What is the capital of Japan?")
        assert gateway.stats()["totals"]["errors"] == 0
