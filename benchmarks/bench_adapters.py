"""What the OpenAI and LangChain adapters cost, against baselines measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_adapters.py [--rounds N]``.

* **Miss**: a call through ``@semantic_cache`` / ``wrap(client)`` / a LangChain
  model with ``set_llm_cache(LangChainSemanticCache(...))``, each question new,
  against the same call made directly (the ``openai`` client, or ``ChatOpenAI``
  with no cache) to the same local server (``FakeOpenAIServer``, no added
  latency).  A miss embeds the prompt, searches, calls upstream and queues the
  store (write-behind; the queue is drained outside the timed region).
* **Hit**: a paraphrase of a cached question (a semantic hit: embed, search,
  guard) and the cached question itself (an exact hit: no embedding) through
  each adapter, against a bare ``SemanticCache.lookup`` of the same text.  The
  model memo is off for hits so every semantic lookup pays for its embedding,
  as a first-seen paraphrase does.  The LangChain row times the cache's own
  ``lookup(prompt, llm_string)``: what LangChain calls, without its own
  invoke machinery.
* **Exact hit, warm and cold**: the adapters remember a repeated request's plan
  and the answer built from its stored entry (``semcache.integrations._memo``;
  the entry is still read and compared on every call).  "exact" rows repeat
  one request through the same adapter (warm: every call but the first).
  "exact, cold" rows ask two cached questions in turn through adapters made
  with ``memo_size=1``, so each call plans, decodes and builds from scratch:
  what the first repeat of a request costs (in a new process, say).

All embeddings are the packaged all-MiniLM-L6-v2.  Rounds are interleaved so
load on a shared machine hits baseline and adapter alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_core.load import dumps  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from openai import OpenAI  # noqa: E402
from semcache.integrations.langchain import LangChainSemanticCache  # noqa: E402
from semcache.integrations.openai import is_cached, semantic_cache, wrap  # noqa: E402

from semcache import SemanticCache, SemanticKV  # noqa: E402
from semcache.embeddings import SentenceTransformerEmbedding  # noqa: E402
from semcache.testing import FakeOpenAIServer  # noqa: E402

MODEL = "gpt-4o-mini"
CACHED = "How do I reverse a list in Python?"
CACHED_TOO = "How do I sort a list of tuples by the second item?"
PARAPHRASE = "How can I reverse a Python list?"
TOPICS = (
    "sort a dictionary by value",
    "read a CSV file",
    "merge two dataframes",
    "parse JSON from a string",
    "start a background thread",
    "format a date as ISO 8601",
    "remove duplicates from a list",
    "open a file for appending",
)
TARGET_HIT_RATIO = 1.2


@dataclass(frozen=True)
class Summary:
    """Timings in milliseconds."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> Summary:
        ms = sorted(s * 1000 for s in seconds)

        def pick(q: float) -> float:
            return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]

        return cls(statistics.median(ms), pick(0.90), pick(0.99))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def question(i: int) -> str:
    """A new question per round (no cache entry, no memo): every miss embeds."""
    topic = TOPICS[i % len(TOPICS)]
    return f"In project {chr(65 + i // len(TOPICS) % 26)}{i}, how do I {topic} in Python?"


def measure_misses(
    server: FakeOpenAIServer, embedding: SentenceTransformerEmbedding, rounds: int
) -> dict[str, list[float]]:
    client = OpenAI(base_url=server.base_url, api_key="bench", max_retries=0)

    def direct(q: str) -> object:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])

    decorated = semantic_cache(direct, cache=SemanticCache(SemanticKV(embedding=embedding)), prompt_arg="q")
    wrapped = wrap(client, cache=SemanticCache(SemanticKV(embedding=embedding)))
    lc_cache = LangChainSemanticCache(SemanticCache(SemanticKV(embedding=embedding)))
    plain_llm = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="bench", max_retries=0)
    cached_llm = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="bench", max_retries=0, cache=lc_cache)
    runs: dict[str, Callable[[str], object]] = {
        "direct openai call": direct,
        "@semantic_cache miss": decorated,
        "wrap(client) miss": lambda q: wrapped.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}]
        ),
        "ChatOpenAI.invoke, no cache": plain_llm.invoke,
        "ChatOpenAI.invoke, LangChainSemanticCache miss": cached_llm.invoke,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        for offset, (name, run) in enumerate(runs.items()):
            q = question(i * len(runs) + offset)
            times[name].append(timed(lambda run=run, q=q: run(q)))
        decorated.semcache.flush()  # drain write-behind outside the timed region
        wrapped.semcache.flush()
        lc_cache.flush()
    assert not is_cached(wrapped.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "new"}]))
    return times


def measure_hits(
    server: FakeOpenAIServer, embedding: SentenceTransformerEmbedding, rounds: int
) -> dict[str, list[float]]:
    client = OpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
    cache = SemanticCache(SemanticKV(embedding=embedding))

    def ask_upstream(q: str) -> str:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])
        return reply.choices[0].message.content or ""

    def adapters(memo_size: int) -> tuple[Callable[[str], str], Any, LangChainSemanticCache]:
        """A decorated function, a wrapped client and a LangChain cache over ``cache``."""
        return (
            semantic_cache(cache=cache, write_behind=False, memo_size=memo_size)(ask_upstream),
            wrap(client, cache=cache, write_behind=False, memo_size=memo_size),
            LangChainSemanticCache(cache, write_behind=False, memo_size=memo_size),
        )

    llm_string = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="bench")._get_llm_string()
    bare_scope = {"model": MODEL}

    def messages(q: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": q}]

    lc_prompts = {t: dumps([HumanMessage(t)]) for t in (CACHED, CACHED_TOO, PARAPHRASE)}  # made by LangChain
    warm, cold = adapters(memo_size=256), adapters(memo_size=1)
    # Fill: the cached questions through each path.
    for text in (CACHED, CACHED_TOO):
        cache.store(text, "reverse() or [::-1]", scope=bare_scope)
        ask, wrapped, lc_cache = warm
        ask(text)
        wrapped.chat.completions.create(model=MODEL, messages=messages(text))
        lc_cache.update(lc_prompts[text], llm_string, lc_cache_generations())
    times: dict[str, list[float]] = {}
    # Cold: two questions in turn through adapters that remember one request, so every call plans,
    # decodes and builds from scratch (the first repeat of a request in a new process).
    for kind, texts, (ask, wrapped, lc_cache) in (
        ("semantic", (PARAPHRASE,), warm),
        ("exact", (CACHED,), warm),
        ("exact, cold", (CACHED, CACHED_TOO), cold),
    ):
        runs: dict[str, Callable[[str], object]] = {
            f"bare SemanticCache.lookup ({kind})": lambda t: cache.lookup(t, scope=bare_scope),
            f"@semantic_cache hit ({kind})": lambda t, ask=ask: ask(t),
            f"wrap(client) hit ({kind})": lambda t, wrapped=wrapped: wrapped.chat.completions.create(
                model=MODEL, messages=messages(t)
            ),
            f"LangChainSemanticCache.lookup hit ({kind})": lambda t, lc=lc_cache: lc.lookup(lc_prompts[t], llm_string),
        }
        for name, run in runs.items():  # every path must really hit before it is timed
            assert all(run(t) is not None for t in texts), name
        for name in runs:
            times[name] = []
        for _ in range(rounds):
            for name, run in runs.items():
                for t in texts:
                    times[name].append(timed(lambda run=run, t=t: run(t)))
    assert server.count("chat.completions") == 4, "a hit went upstream"  # the fill: 2 questions x 2 paths
    return times


def lc_cache_generations() -> list:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration

    return [ChatGeneration(message=AIMessage("reverse() or [::-1]"))]


def ms(value: float, sign: str = "") -> str:
    """Milliseconds with three decimals below 1 ms (exact hits take tens of microseconds), two above."""
    return f"{value:{sign}.3f}" if abs(value) < 1 else f"{value:{sign}.2f}"


def row(name: str, summary: Summary, baseline: Summary | None) -> str:
    ratio = f"{summary.p50 / baseline.p50:.2f}x" if baseline else "1.00x (baseline)"
    added = ms(summary.p50 - baseline.p50, "+") if baseline else ""
    return f"| {name} | {ms(summary.p50)} | {ms(summary.p90)} | {ms(summary.p99)} | {added} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per row (default 60)")
    args = parser.parse_args()
    miss_embedding = SentenceTransformerEmbedding()
    hit_embedding = SentenceTransformerEmbedding(memo_size=0)
    miss_embedding.embed(["warm-up"])
    with FakeOpenAIServer() as server:
        misses = measure_misses(server, miss_embedding, args.rounds)
        server.reset()
        hits = measure_hits(server, hit_embedding, args.rounds * 2)
    s = {name: Summary.of(t) for name, t in {**misses, **hits}.items()}

    print(f"# bench_adapters: {args.rounds} rounds per miss row, {args.rounds * 2} per hit row, interleaved")
    print(
        f"# {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
        f"python {platform.python_version()} openai {version('openai')} langchain-core {version('langchain-core')} "
        f"langchain-openai {version('langchain-openai')} torch {version('torch')}"
    )
    print()
    print("| path | p50 ms | p90 ms | p99 ms | added p50 ms | ratio p50 |")
    print("|---|---|---|---|---|---|")
    direct, plain = s["direct openai call"], s["ChatOpenAI.invoke, no cache"]
    print(row("direct openai call (baseline)", direct, None))
    print(row("@semantic_cache miss", s["@semantic_cache miss"], direct))
    print(row("wrap(client) miss", s["wrap(client) miss"], direct))
    print(row("ChatOpenAI.invoke, no cache (baseline)", plain, None))
    print(
        row(
            "ChatOpenAI.invoke, LangChainSemanticCache miss", s["ChatOpenAI.invoke, LangChainSemanticCache miss"], plain
        )
    )
    verdicts = []
    for kind in ("semantic", "exact", "exact, cold"):
        bare = s[f"bare SemanticCache.lookup ({kind})"]
        print(row(f"bare SemanticCache.lookup, {kind} hit (baseline)", bare, None))
        for adapter in ("@semantic_cache hit", "wrap(client) hit", "LangChainSemanticCache.lookup hit"):
            summary = s[f"{adapter} ({kind})"]
            print(row(f"{adapter}, {kind}", summary, bare))
            verdicts.append((f"{adapter}, {kind}", summary.p50 / bare.p50))
    print()
    for name, ratio in verdicts:
        verdict = "meets" if ratio <= TARGET_HIT_RATIO else "misses"
        print(f"# {name}: {ratio:.2f}x bare lookup, {verdict} the {TARGET_HIT_RATIO}x target")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
