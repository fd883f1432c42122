"""LiteLLM's proxy and ``semcache serve`` side by side, in one run, in front of the same upstream.

Run from the checkout, with LiteLLM's proxy in a virtualenv of its own (it pins
its own FastAPI, uvicorn and openai versions)::

    python3 -m venv ../lab/litellm-venv && ../lab/litellm-venv/bin/pip install 'litellm[proxy]'
    nice -n 5 .venv/bin/python benchmarks/vs_litellm.py --litellm ../lab/litellm-venv/bin/litellm

**The contenders.**  The bundled OpenAI-compatible server
(:class:`semcache.testing.FakeOpenAIServer`, answering at once) is the
upstream of both, in a process of its own by default (``--upstream thread``
runs it in this process instead, where it shares the GIL with the client).
LiteLLM's proxy (one uvicorn process, as ``litellm --config`` starts it) has its
in-memory cache on (``cache: true``, ``cache_params: {type: local}``), a master
key (it refuses to start without one), its local model cost map
(``LITELLM_LOCAL_MODEL_COST_MAP=True``, so it fetches nothing) and
``LITELLM_LOG=ERROR`` (no access log, as its production page advises).
``semcache serve`` runs one tenant over an in-memory store with the packaged
all-MiniLM-L6-v2 (``--embedding`` changes it), its access log off as always.
A second ``semcache serve`` with the ``hash:384`` embedding (no model) takes
part in the misses only: its overhead is the gateway's own, without the model
call.  Both are read from inside too: their Prometheus latency histograms
(lookup, upstream call, whole request), read before and after each phase.

**The client** is ``httpx.AsyncClient`` in this process, one per contender,
keep-alive on; every contender gets the same JSON bodies (only the
``Authorization`` header differs).

**What is measured**, contenders interleaved round by round (their order
rotates each round), the load average printed beside each table:

* *exact-repeat hits*: the 8 cached prompts asked again, at 1 and at 32
  concurrent clients: latency p50/p99 of each request and throughput
  (requests / wall time of the round).  Every answer is checked to be a hit
  (semcache's ``x-semcache: hit``, LiteLLM's ``x-litellm-cache-key``) and the
  upstream's counter is read around each round;
* *misses*: a fresh prompt per request (random words, so no two are
  paraphrases), one client, sent to the upstream directly and through both
  gateways (and the no-model semcache); the miss overhead is a gateway's miss
  p50 minus the direct p50.
  semcache embeds a miss before asking the upstream (its semantic lookup),
  LiteLLM only hashes it;
* *paraphrases*: the 8 cached prompts reworded, sent to both: semcache serves
  semantic hits, LiteLLM's exact-match cache cannot (each is a miss and a call
  upstream).  A semcache exact repeat never embeds (the exact path), a
  paraphrase does, so its latency is shown apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from semcache._cli.latency import CACHED, PARAPHRASES, Summary  # noqa: E402

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "vs-litellm-output.txt"
LAB_LITELLM = REPO.parent.parent / "lab" / "litellm-venv" / "bin" / "litellm"  # the development machine's
MODEL = "gpt-4o-mini"
CONCURRENCY = (1, 32)
ROUNDS = 10
STOP_SECONDS = 15.0
START_SECONDS = 180.0
INSTALL_HINT = ("LiteLLM's proxy is not installed. Install it in a virtualenv of its own and pass its executable:\n"
                "    python3 -m venv ../lab/litellm-venv && ../lab/litellm-venv/bin/pip install 'litellm[proxy]'\n"
                "    python benchmarks/vs_litellm.py --litellm ../lab/litellm-venv/bin/litellm")
SEMCACHE, LITELLM, DIRECT = "semcache serve", "LiteLLM proxy", "upstream directly"
NO_MODEL = "hash:384"  # an embedding without a model: the gateway's own miss overhead, apart from the model's
SEMCACHE_NO_MODEL = f"semcache serve, {NO_MODEL} (no model)"
# Targets (issue 12): reported as ratios of the same run, never asserted.
TARGET_HIT_P50 = 0.5  # semcache exact-hit p50 <= 0.5 x LiteLLM's
TARGET_THROUGHPUT = 2.0  # semcache hit throughput >= 2 x LiteLLM's
TARGET_MISS_OVERHEAD_MS = 2.0  # semcache miss p50 - direct p50 <= 2 ms


# ------------------------------------------------------------------ payloads and configs
def chat_body(prompt: str) -> dict[str, Any]:
    """The request every contender gets for ``prompt`` (temperature unset: cacheable by both)."""
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}


def fresh_prompts(count: int, seed: int = 12) -> list[str]:
    """``count`` distinct prompts of random made-up words: no two are paraphrases, none is cached.

    >>> a, b = fresh_prompts(2)
    >>> a != b and a.endswith("?")
    True
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    prompts: list[str] = []
    while len(prompts) < count:
        words = ["".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
                 for _ in range(rng.randint(6, 9))]
        prompt = " ".join(words).capitalize() + "?"
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def litellm_config(upstream_url: str, master_key: str) -> str:
    """LiteLLM's proxy config (JSON, which its YAML loader reads): one model, the in-memory cache on.

    The cache's TTL is raised from its 600 s default to an hour so a long run's hot prompts do not expire.
    """
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": upstream_url, "api_key": "fake"}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local", "ttl": 3600}},
        "general_settings": {"master_key": master_key},
    }
    return json.dumps(config, indent=2) + "\n"


def semcache_config(upstream_url: str, key_hash: str, embedding: str | None, admin_hash: str | None = None,
                    *, speculative: bool = False) -> str:
    """``semcache serve``'s TOML config: any free port, one tenant, an in-memory store (an admin key reads /metrics)."""
    lines = ["[server]", "port = 0"]
    if admin_hash:
        lines.append(f"admin_key_hashes = [{json.dumps(admin_hash)}]")
    lines += ["", "[cache]"]
    if embedding:
        lines.append(f"embedding = {json.dumps(embedding)}")
    lines += ["", "[[upstreams]]", 'name = "fake"', f"base_url = {json.dumps(upstream_url)}", "",
              "[[tenants]]", 'name = "bench"', f"key_hashes = [{json.dumps(key_hash)}]"]
    if speculative:
        lines.append("speculative_upstream = true")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ reading answers
def semcache_outcome(headers: Mapping[str, str]) -> str:
    """``"exact"``, ``"semantic"`` or ``"miss"`` from semcache's response headers."""
    if headers.get("x-semcache") != "hit":
        return "miss"
    return "exact" if float(headers.get("x-semcache-similarity", "0")) >= 0.999999 else "semantic"


def litellm_outcome(headers: Mapping[str, str]) -> str:
    """``"exact"`` when LiteLLM served its cache (it names the cache key only then), else ``"miss"``."""
    return "exact" if headers.get("x-litellm-cache-key") else "miss"


def direct_outcome(headers: Mapping[str, str]) -> str:
    return "miss"


# ------------------------------------------------------------------ the gateway's own timings
_SERIES = re.compile(r"^(\w+)_(sum|count)\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
INSIDE = {"lookup": ("semcache_gateway_lookup_seconds", {}),
          "upstream call": ("semcache_gateway_upstream_seconds", {}),
          "whole miss": ("semcache_gateway_request_seconds", {"outcome": "miss"}),
          "whole hit": ("semcache_gateway_request_seconds", {"outcome": "hit"})}


def histogram_totals(exposition: str, name: str, labels: Mapping[str, str]) -> tuple[float, float]:
    """(sum, count) of histogram ``name`` over its series whose labels include ``labels`` (Prometheus text)."""
    total = {"sum": 0.0, "count": 0.0}
    for metric, part, label_text, value in _SERIES.findall(exposition):
        if metric == name and labels.items() <= dict(_LABEL.findall(label_text)).items():
            total[part] += float(value)
    return total["sum"], total["count"]


def inside_means(before: str, after: str) -> dict[str, float | None]:
    """The mean of each :data:`INSIDE` histogram between two expositions, in seconds (None: no sample)."""
    means: dict[str, float | None] = {}
    for what, (name, labels) in INSIDE.items():
        (sum0, count0), (sum1, count1) = histogram_totals(before, name, labels), histogram_totals(after, name, labels)
        means[what] = (sum1 - sum0) / (count1 - count0) if count1 > count0 else None
    return means


def inside_table(by_phase: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> str:
    """What semcache's own histograms say its requests took in each phase (gateways it did not serve left out)."""
    lines = ["Inside semcache (means of its own latency histograms over each phase, ms; the lookup runs in a "
             "worker thread and includes the model call; a miss's store runs after its answer):", "",
             "| phase | gateway | " + " | ".join(INSIDE) + " |", "|---|---|" + "---|" * len(INSIDE)]
    for phase, by_contender in by_phase.items():
        for name, means in by_contender.items():
            if any(v is not None for v in means.values()):
                values = " | ".join("-" if v is None else ms(v) for v in means.values())
                lines.append(f"| {phase} | {name} | {values} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ samples and tables
@dataclass
class Samples:
    """What one contender did in one phase: request latencies, wall time, outcomes, upstream calls."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    upstream_calls: int = 0
    semantic: list[float] = field(default_factory=list)  # the latencies of semantic hits
    server_cpu: float = 0.0  # CPU seconds the contender's server process used (0: not measured)
    client_cpu: float = 0.0  # CPU seconds this process (the client) used meanwhile

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.requests / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.server_cpu / self.requests if self.requests else 0.0

    @property
    def client_cpu_per_request(self) -> float:
        return self.client_cpu / self.requests if self.requests else 0.0

    def summary(self) -> Summary:
        return Summary.of(self.latencies)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}x" if theirs > 0 else "n/a"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def hits_table(by_clients: Mapping[int, Mapping[str, Samples]], load: str) -> str:
    """Exact-repeat hits per contender and client count, then semcache / LiteLLM ratios."""
    lines = [f"Exact-repeat hits ({len(CACHED)} cached prompts asked again; load average {load}):", "",
             "| contender | clients | requests | p50 ms | p99 ms | requests/s | server CPU ms per request | "
             "client CPU ms per request | hits | upstream calls |", "|---|---|---|---|---|---|---|---|---|---|"]
    for clients, samples in by_clients.items():
        for name, s in samples.items():
            summary = s.summary()
            lines.append(f"| {name} | {clients} | {s.requests} | {ms(summary.median)} | {ms(summary.p99)} | "
                         f"{s.throughput:.0f} | {ms(s.cpu_per_request)} | {ms(s.client_cpu_per_request)} | "
                         f"{s.outcomes['exact'] + s.outcomes['semantic']} | {s.upstream_calls} |")
    lines.append("")
    for clients, samples in by_clients.items():
        mine, theirs = samples[SEMCACHE], samples[LITELLM]
        lines.append(f"semcache / LiteLLM at {clients} client{'s' if clients > 1 else ''}: p50 "
                     f"{ratio(mine.summary().median, theirs.summary().median)}, p99 "
                     f"{ratio(mine.summary().p99, theirs.summary().p99)}, throughput "
                     f"{ratio(mine.throughput, theirs.throughput)}, server CPU per request "
                     f"{ratio(mine.cpu_per_request, theirs.cpu_per_request)}")
    return "\n".join(lines)


def miss_overheads(samples: Mapping[str, Samples]) -> dict[str, float]:
    """Each gateway's miss p50 minus the direct call's p50, in seconds."""
    direct = samples[DIRECT].summary().median
    return {name: s.summary().median - direct for name, s in samples.items() if name != DIRECT}


def misses_table(samples: Mapping[str, Samples], load: str) -> str:
    """Misses through each gateway beside the direct call: p50, p99 and the overhead over direct."""
    overheads = miss_overheads(samples)
    lines = [f"Misses (a fresh prompt each, 1 client; load average {load}):", "",
             "| path | requests | p50 ms | p99 ms | misses | upstream calls | overhead over direct, p50 ms |",
             "|---|---|---|---|---|---|---|"]
    for name, s in samples.items():
        summary = s.summary()
        overhead = ms(overheads[name]) if name in overheads else "-"
        lines.append(f"| {name} | {s.requests} | {ms(summary.median)} | {ms(summary.p99)} | {s.outcomes['miss']} | "
                     f"{s.upstream_calls} | {overhead} |")
    return "\n".join(lines)


def paraphrase_table(samples: Mapping[str, Samples], passes: int, load: str) -> str:
    """Paraphrases of the cached prompts: what each gateway served, and semcache's semantic-hit latency."""
    lines = [f"Paraphrases of the cached prompts ({len(PARAPHRASES)} paraphrases x {passes} passes; "
             f"load average {load}):", "",
             "| contender | requests | semantic hits | exact hits | misses | upstream calls | "
             "semantic hit p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for name, s in samples.items():
        latency = Summary.of(s.semantic) if s.semantic else None
        p50, p99 = (ms(latency.median), ms(latency.p99)) if latency else ("-", "-")
        lines.append(f"| {name} | {s.requests} | {s.outcomes['semantic']} | {s.outcomes['exact']} | "
                     f"{s.outcomes['miss']} | {s.upstream_calls} | {p50} | {p99} |")
    lines += ["", "LiteLLM's exact hits here are its own repeats of a paraphrase it stored on the first pass "
                  "(the first pass is all misses)."]
    return "\n".join(lines)


def targets_table(hits: Mapping[int, Mapping[str, Samples]], misses: Mapping[str, Samples]) -> str:
    """The three targets of issue 12, each as measured in this run."""
    lines = ["Targets (ratios of this run):", "", "| target | measured | verdict |", "|---|---|---|"]
    for clients, samples in hits.items():
        p50 = samples[SEMCACHE].summary().median / samples[LITELLM].summary().median
        lines.append(f"| exact-hit p50 <= {TARGET_HIT_P50}x LiteLLM's, {clients} client(s) | {p50:.2f}x | "
                     f"{verdict(p50 <= TARGET_HIT_P50)} |")
    for clients, samples in hits.items():
        rate = samples[SEMCACHE].throughput / samples[LITELLM].throughput
        lines.append(f"| hit throughput >= {TARGET_THROUGHPUT}x LiteLLM's, {clients} client(s) | {rate:.2f}x | "
                     f"{verdict(rate >= TARGET_THROUGHPUT)} |")
    overheads = miss_overheads(misses)
    for name in (SEMCACHE, SEMCACHE_NO_MODEL):
        if name in overheads:
            mine = overheads[name] * 1e3
            lines.append(f"| miss overhead <= {TARGET_MISS_OVERHEAD_MS} ms p50, {name} | {mine:.2f} ms (LiteLLM "
                         f"{overheads[LITELLM] * 1e3:.2f} ms) | {verdict(mine <= TARGET_MISS_OVERHEAD_MS)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ processes
class Service:
    """A process this benchmark started: stopped by SIGTERM, then killed if it lingers."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log: Path,
                 read_stdout: bool = True, stdin: bool = False) -> None:
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self._log_file = log.open("w", encoding="utf-8")
        # Its own session: a Ctrl-C in the terminal reaches this script only, which stops it in order.
        self.process = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE if read_stdout else self._log_file, stderr=self._log_file,
            text=True, env=dict(env), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            start_new_session=True, bufsize=1,
        )
        RUNNING.append(self)

    def cpu_seconds(self) -> float:
        """The CPU time (user + system, all threads) the process has used so far (Linux's /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first line of its stdout matching ``pattern`` (a RuntimeError when it exits or times out)."""
        found: list[re.Match[str]] = []
        done = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                match = pattern.search(line)
                if match and not found:
                    found.append(match)
                    done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout) or not found:
            raise RuntimeError(f"{self.name} did not start: {self.tail()}")
        return found[0]

    def tail(self) -> str:
        self._log_file.flush()
        return (" ".join(self.lines[-5:]) + self.log.read_text(encoding="utf-8", errors="replace"))[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)
        self._log_file.close()
        if self in RUNNING:
            RUNNING.remove(self)


RUNNING: list[Service] = []


def stop_all() -> None:
    """Stop every process still running, the last started first."""
    for service in reversed(list(RUNNING)):
        service.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Upstream(Protocol):
    base_url: str

    def count(self) -> int: ...

    def close(self) -> None: ...


class ThreadUpstream:
    """The bundled server in this process (it shares the GIL with the client)."""

    def __init__(self) -> None:
        from semcache.testing import FakeOpenAIServer

        self.server = FakeOpenAIServer().start()
        self.base_url = self.server.base_url

    def count(self) -> int:
        return self.server.count("chat.completions")

    def close(self) -> None:
        self.server.stop()


class ProcessUpstream:
    """The bundled server in a process of its own; its counter read over a pipe (``count`` -> a number)."""

    def __init__(self, folder: Path) -> None:
        self.service = Service("the upstream", [sys.executable, __file__, "--serve-upstream"], env=child_env(),
                               log=folder / "upstream.log", stdin=True)
        self.base_url = self.service.wait_for_line(re.compile(r"^upstream (\S+)"), 60).group(1)
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            process = self.service.process
            assert process.stdin is not None
            before = len(self.service.lines)
            process.stdin.write("count\n")
            process.stdin.flush()
            deadline = time.monotonic() + 30
            while len(self.service.lines) <= before:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the upstream stopped answering: {self.service.tail()}")
                time.sleep(0.001)
            return int(self.service.lines[before].split()[1])

    def close(self) -> None:
        self.service.stop()


def serve_upstream() -> int:
    """``--serve-upstream``: the bundled server until stdin closes, printing its counter on each ``count``."""
    from semcache.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        print(f"upstream {server.base_url}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(f"count {server.count('chat.completions')}", flush=True)
    return 0


def child_env(**more: str) -> dict[str, str]:
    """This process's environment, offline, with this checkout first on the import path."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **more}


def start_litellm(executable: Path, upstream: str, folder: Path) -> Contender:
    """LiteLLM's proxy on a free loopback port, once it answers."""
    key = "sk-litellm-bench-" + os.urandom(16).hex()
    config = folder / "litellm.yaml"
    config.write_text(litellm_config(upstream, key), encoding="utf-8")
    port = free_port()
    env = child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
                    DISABLE_ADMIN_UI="True")
    service = Service(LITELLM, [str(executable), "--config", str(config), "--host", "127.0.0.1",
                                "--port", str(port)], env=env, log=folder / "litellm.log", read_stdout=False)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"LiteLLM's proxy exited: {service.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root}/health/liveliness", timeout=2).status_code == 200:
                return Contender(LITELLM, f"{root}/v1", key, litellm_outcome, service.cpu_seconds)
        time.sleep(0.5)
    raise RuntimeError(f"LiteLLM's proxy did not answer in {START_SECONDS:.0f} s: {service.tail()}")


def start_semcache(name: str, upstream: str, folder: Path, embedding: str | None, *,
                   speculative: bool = False) -> Contender:
    """``semcache serve`` on a free loopback port, once it says where it listens."""
    from semcache._gateway.config import hash_key, new_key

    key, admin = new_key(), new_key("sk-admin-")
    stem = "semcache-" + re.sub(r"\W+", "-", embedding or "minilm")
    config = folder / f"{stem}.toml"
    config.write_text(semcache_config(upstream, hash_key(key), embedding, hash_key(admin), speculative=speculative),
                      encoding="utf-8")
    service = Service(name, [sys.executable, "-m", "semcache", "serve", "--config", str(config)],
                      env=child_env(), log=folder / f"{stem}.log")
    match = service.wait_for_line(re.compile(r"listening on (http://\S+)"), START_SECONDS)
    return Contender(name, f"{match.group(1)}/v1", key, semcache_outcome, service.cpu_seconds, admin)


# ------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class Contender:
    """Where a contender listens, its key, and how to read a hit from its headers."""

    name: str
    base_url: str
    key: str
    outcome: Callable[[Mapping[str, str]], str]
    cpu_seconds: Callable[[], float] | None = None  # the server process's CPU time so far
    admin_key: str | None = None  # semcache's: reads its /metrics


class Bench:
    """Sends the same bodies to each contender through one keep-alive client each, counting as it goes."""

    def __init__(self, contenders: Sequence[Contender], upstream: Upstream) -> None:
        self.contenders = {c.name: c for c in contenders}
        self.upstream = upstream
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.clients = {c.name: httpx.AsyncClient(base_url=c.base_url, limits=limits, timeout=120,
                                                  headers={"authorization": f"Bearer {c.key}"})
                        for c in contenders}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def ask(self, name: str, prompt: str) -> tuple[float, str, httpx.Response]:
        """One request: its latency, the contender's outcome, the response."""
        started = time.perf_counter()
        response = await self.clients[name].post("/chat/completions", json=chat_body(prompt))
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:500]}")
        return latency, self.contenders[name].outcome(response.headers), response

    async def exposition(self) -> dict[str, str]:
        """Each semcache contender's Prometheus text (its /metrics, read with its admin key)."""
        texts = {}
        for name, contender in self.contenders.items():
            if contender.admin_key:
                response = await self.clients[name].get(contender.base_url.removesuffix("/v1") + "/metrics",
                                                        headers={"authorization": f"Bearer {contender.admin_key}"})
                response.raise_for_status()
                texts[name] = response.text
        return texts

    async def inside(self, measure: Awaitable[T]) -> tuple[T, dict[str, dict[str, float | None]]]:
        """``measure`` awaited between two reads of semcache's histograms; its result and their means by gateway."""
        before = await self.exposition()
        result = await measure
        after = await self.exposition()
        return result, {name: inside_means(before[name], after[name]) for name in after}

    async def round(self, name: str, prompts: Sequence[str], clients: int, into: Samples) -> None:
        """``prompts`` sent by ``clients`` concurrent clients; latencies, wall time and upstream calls added."""
        queue = iter(prompts)

        async def client() -> None:
            for prompt in queue:
                latency, outcome, _ = await self.ask(name, prompt)
                into.latencies.append(latency)
                into.outcomes[outcome] += 1
                if outcome == "semantic":
                    into.semantic.append(latency)

        cpu_seconds = self.contenders[name].cpu_seconds
        before = await asyncio.to_thread(self.upstream.count)
        cpu_before = cpu_seconds() if cpu_seconds else 0.0
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        into.wall += time.perf_counter() - started
        into.client_cpu += time.process_time() - client_before
        into.server_cpu += (cpu_seconds() - cpu_before) if cpu_seconds else 0.0
        into.upstream_calls += await asyncio.to_thread(self.upstream.count) - before


def rotated(names: Sequence[str], step: int) -> list[str]:
    """``names`` starting at ``step`` (mod their count): each round another contender goes first.

    >>> rotated(["a", "b", "c"], 4)
    ['b', 'c', 'a']
    """
    step %= len(names)
    return [*names[step:], *names[:step]]


def load_average() -> float:
    return os.getloadavg()[0]


async def warm_up(bench: Bench, names: Sequence[str]) -> None:
    """Store the cached prompts in each gateway, check they are served from it, open the connections."""
    for name in names:
        for prompt in CACHED:
            await bench.ask(name, prompt)
        for prompt in CACHED:
            # semcache stores an answer just after sending it: ask again (bounded) until it is served cached
            for _ in range(50):
                _, outcome, _ = await bench.ask(name, prompt)
                if outcome == "exact":
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name} did not serve {prompt!r} from its cache within 50 asks")
        clients = max(CONCURRENCY)
        await bench.round(name, [CACHED[i % len(CACHED)] for i in range(4 * clients)], clients, Samples())


async def measure_hits(bench: Bench, requests: int, clients: int) -> dict[str, Samples]:
    """Exact repeats of the cached prompts, ``requests`` per contender over :data:`ROUNDS` rounds."""
    names = [SEMCACHE, LITELLM]
    samples = {name: Samples() for name in names}
    per_round = max(clients, requests // ROUNDS)
    prompts = [CACHED[i % len(CACHED)] for i in range(per_round)]
    for step in range(ROUNDS):
        for name in rotated(names, step):
            await bench.round(name, prompts, clients, samples[name])
    return samples


async def measure_misses(bench: Bench, requests: int) -> dict[str, Samples]:
    """A fresh prompt per request, asked of the upstream and of each gateway in turn, one client."""
    names = [DIRECT, SEMCACHE, LITELLM, SEMCACHE_NO_MODEL]
    samples = {name: Samples() for name in names}
    prompts = fresh_prompts(requests)
    per_round = max(1, requests // ROUNDS)
    for step in range(0, requests, per_round):
        chunk = prompts[step : step + per_round]
        for name in rotated(names, step // per_round):
            await bench.round(name, chunk, 1, samples[name])
    return samples


async def measure_paraphrases(bench: Bench, passes: int) -> dict[str, Samples]:
    """The paraphrases, ``passes`` times over, to each gateway in turn, one client."""
    names = [SEMCACHE, LITELLM]
    samples = {name: Samples() for name in names}
    for step in range(passes):
        for name in rotated(names, step):
            await bench.round(name, list(PARAPHRASES), 1, samples[name])
    return samples


# ------------------------------------------------------------------ the run
def versions(litellm_version: str, upstream_mode: str, embedding: str | None) -> str:
    """The machine and the versions, one line."""
    found = [f"litellm {litellm_version}"]
    for name in ("semcache-llm", "httpx", "uvicorn", "starlette", "sentence-transformers", "torch"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return (f"{platform.machine()} cpus={os.cpu_count()} python {platform.python_version()}, " + ", ".join(found)
            + f"; semcache embedding {embedding or 'all-MiniLM-L6-v2 (packaged)'}; upstream in "
              f"{'its own process' if upstream_mode == 'process' else 'the client process (a thread)'}")


def find_litellm(given: str | None) -> Path | None:
    """The LiteLLM executable: ``--litellm``, else ``litellm`` on PATH, else the development machine's venv."""
    if given:
        path = Path(given)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    on_path = shutil.which("litellm")
    if on_path:
        return Path(on_path)
    return LAB_LITELLM if LAB_LITELLM.is_file() else None


def shown_command(argv: Sequence[str]) -> str:
    """The command line that made a report, less ``--out`` and ``--litellm`` (paths of this machine)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--out", "--litellm"):
            skip = True
            continue
        if arg.startswith(("--out=", "--litellm=")):
            continue
        shown.append(arg)
    return " ".join(["python benchmarks/vs_litellm.py", *shown])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm", default=None,
                        help=f"LiteLLM's executable (default: litellm on PATH, else {LAB_LITELLM})")
    parser.add_argument("--requests", type=int, default=2000,
                        help="exact-hit requests per contender and client count (default 2000; a tenth of it, "
                             "at least 50, misses)")
    parser.add_argument("--passes", type=int, default=5, help="passes over the paraphrases (default 5)")
    parser.add_argument("--upstream", choices=("process", "thread"), default="process",
                        help="the bundled upstream in its own process (default) or in this one")
    parser.add_argument("--embedding", default=None,
                        help='semcache\'s model (default: the packaged MiniLM; "hash:384" takes the model out)')
    parser.add_argument("--speculative", action="store_true",
                        help="semcache's tenant sets speculative_upstream: the upstream call starts beside the "
                             "semantic lookup (the no-model gateway stays as it is)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the report goes too ({DEFAULT_OUT})")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.passes < 1:
        parser.error("--requests and --passes must be at least 1")
    return args


async def run(args: argparse.Namespace, litellm: Path, folder: Path) -> str:
    """Start the upstream and both gateways, measure, and return the report (everything stopped after)."""
    upstream: Upstream = ProcessUpstream(folder) if args.upstream == "process" else ThreadUpstream()
    try:
        print("# starting LiteLLM's proxy and semcache serve ...", file=sys.stderr, flush=True)
        litellm_proxy = start_litellm(litellm, upstream.base_url, folder)
        semcache_serve = start_semcache(SEMCACHE, upstream.base_url, folder, args.embedding,
                                        speculative=args.speculative)
        no_model = start_semcache(SEMCACHE_NO_MODEL, upstream.base_url, folder, NO_MODEL)
        bench = Bench([Contender(DIRECT, upstream.base_url, "fake", direct_outcome), semcache_serve,
                       litellm_proxy, no_model], upstream)
        try:
            return await measure_all(bench, args)
        finally:
            await bench.close()
    finally:
        stop_all()
        upstream.close()


async def phase(what: str, measure: Awaitable[T]) -> tuple[T, str]:
    """``measure`` awaited with a progress line; its result and the load average around it."""
    print(f"# {what} ...", file=sys.stderr, flush=True)
    before = load_average()
    result = await measure
    return result, f"{before:.1f} before, {load_average():.1f} after"


async def measure_all(bench: Bench, args: argparse.Namespace) -> str:
    """Warm-up, then the three phases, each with its load average; the report's tables."""
    await warm_up(bench, [SEMCACHE, LITELLM, SEMCACHE_NO_MODEL])
    _, _, probe = await bench.ask(LITELLM, CACHED[0])
    litellm_version = probe.headers.get("x-litellm-version", "(unknown)")
    hits, loads, inside = {}, [], {}
    for clients in CONCURRENCY:
        label = f"exact hits, {clients} client(s)"
        (hits[clients], inside[label]), load = await phase(label, bench.inside(
            measure_hits(bench, args.requests, clients)))
        loads.append(f"{load} {clients} client(s)")
    (misses, inside["misses"]), miss_load = await phase("misses", bench.inside(
        measure_misses(bench, max(50, args.requests // 10))))
    paraphrases, paraphrase_load = await phase("paraphrases", measure_paraphrases(bench, args.passes))
    tables = [hits_table(hits, "; ".join(loads)), misses_table(misses, miss_load), inside_table(inside),
              paraphrase_table(paraphrases, args.passes, paraphrase_load), targets_table(hits, misses)]
    header = [f"Run: `{shown_command(args.argv)}`", "",
              f"Machine and versions: {versions(litellm_version, args.upstream, args.embedding)}", "", ""]
    return "\n".join(header) + "\n\n".join(tables) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        return serve_upstream()
    args.argv = list(sys.argv[1:] if argv is None else argv)
    litellm = find_litellm(args.litellm)
    if litellm is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    # Both raise KeyboardInterrupt, so the processes are stopped in order; SIGINT too, since a shell starts a
    # background job with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    with tempfile.TemporaryDirectory(prefix="vs-litellm-") as folder:
        try:
            report = asyncio.run(run(args, litellm, Path(folder)))
        except KeyboardInterrupt:
            stop_all()
            print("interrupted: every process started was stopped", file=sys.stderr)
            return 130
    print(report, end="")
    args.out.write_text(report, encoding="utf-8")
    return 0


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
