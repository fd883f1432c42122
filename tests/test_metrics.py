"""``semcache.metrics``: a cache's and its store's stats as Prometheus metrics, in a registry and over HTTP."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import semcache.metrics as metrics
from semcache import SemanticKV
from semcache.embeddings import HashEmbedding
from semcache.errors import ConfigurationError, InvalidInputError, ShardUnavailableError

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: bytes | str) -> Samples:
    """Every sample of a Prometheus text exposition: ``{(name, labels): value}``."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_the_module_exports_a_pinned_list():
    assert metrics.__all__ == ["CacheCollector", "MetricsServer", "register", "serve_metrics", "unregister"]


def test_lookups_and_stores_are_counted_exactly(make_cache):
    cache = make_cache(threshold=0.9)
    registry = CollectorRegistry()
    metrics.register(cache, registry)
    prompts = [f"question number {word} about the weather" for word in ("one", "two", "three", "four", "five")]
    for prompt in prompts:
        cache.store(prompt, f"answer to {prompt}")
    for prompt in prompts:
        assert cache.lookup(prompt).exact
    cache.store("what is the capital of france", "Paris")
    assert not cache.lookup("the capital of france is what").exact  # the same words: a semantic hit
    cache.store("how many legs do 3 spiders have", "24")
    assert cache.lookup("how many legs do 4 spiders have", threshold=0.3) is None  # vetoed: numbers differ
    assert cache.lookup("completely unrelated words here") is None
    assert cache.get_or_compute("a prompt computed on its miss", lambda: "computed") == "computed"

    found = samples(generate_latest(registry))
    ns = {"namespace": "semcache"}
    assert value(found, "semcache_cache_lookups_total", **ns) == 9
    assert value(found, "semcache_cache_hits_total", kind="exact", **ns) == 5
    assert value(found, "semcache_cache_hits_total", kind="semantic", **ns) == 1
    assert value(found, "semcache_cache_misses_total", **ns) == 3  # the veto, the unrelated prompt, the compute
    assert value(found, "semcache_cache_guard_vetoes_total", reason="numbers", **ns) == 1
    assert value(found, "semcache_cache_stores_total", **ns) == 8
    assert value(found, "semcache_cache_computes_total", **ns) == 1
    assert value(found, "semcache_cache_verifier_refusals_total", **ns) == 0
    assert value(found, "semcache_cache_wrong_hit_reports_total", **ns) == 0
    assert value(found, "semcache_cache_single_flight_waits_total", **ns) == 0
    stats = cache.backend.stats()
    assert value(found, "semcache_store_up", **ns) == 1
    assert value(found, "semcache_store_entries", **ns) == 8 == stats["entries"]
    assert value(found, "semcache_store_bytes", **ns) == stats["value_bytes"] > 0
    for name in ("puts", "gets", "searches", "embedding_model_calls"):
        assert value(found, f"semcache_store_{name}_total", **ns) == stats[name] > 0, name


def test_a_wrong_hit_report_is_counted(make_cache):
    cache = make_cache(threshold=0.9)
    registry = CollectorRegistry()
    metrics.register(cache, registry)
    cache.store("what is the capital of france", "Paris")
    cache.report_wrong_hit(cache.lookup("what is the capital of france"))
    found = samples(generate_latest(registry))
    assert value(found, "semcache_cache_wrong_hit_reports_total", namespace="semcache") == 1


def test_one_collector_per_registry_and_a_shared_store_reported_once(make_cache):
    cache = make_cache(threshold=0.9)
    other = cache.view("other")
    registry = CollectorRegistry()
    collector = metrics.register(cache, registry)
    assert metrics.register(other, registry) is collector
    assert metrics.register(cache, registry) is collector  # twice: exported once
    cache.store("what is the capital of france", "Paris")
    other.lookup("what is the capital of france")
    found = samples(generate_latest(registry))
    assert value(found, "semcache_cache_stores_total", namespace="semcache") == 1
    assert value(found, "semcache_cache_misses_total", namespace="other") == 1
    assert [key for key in found if key[0] == "semcache_store_entries"] == [
        ("semcache_store_entries", frozenset({("namespace", "other,semcache")}))
    ]


def test_unregister_removes_the_series_and_the_last_cache_the_collector(make_cache):
    cache, second = make_cache(threshold=0.9), make_cache(threshold=0.9, namespace="second")
    registry = CollectorRegistry()
    metrics.register(cache, registry)
    metrics.register(second, registry)
    assert metrics.unregister(cache, registry)
    assert not metrics.unregister(cache, registry)
    found = samples(generate_latest(registry))
    assert ("semcache_cache_lookups_total", frozenset({("namespace", "semcache")})) not in found
    assert value(found, "semcache_cache_lookups_total", namespace="second") == 0
    assert metrics.unregister(second, registry)
    assert generate_latest(registry) == b""
    metrics.register(cache, registry)  # registering again makes a new collector
    assert value(samples(generate_latest(registry)), "semcache_cache_lookups_total", namespace="semcache") == 0


def test_register_defaults_to_the_global_registry(make_cache):
    cache = make_cache(threshold=0.9, namespace="global-registry-test")
    metrics.register(cache)
    try:
        found = samples(generate_latest(REGISTRY))
        assert value(found, "semcache_cache_lookups_total", namespace="global-registry-test") == 0
    finally:
        assert metrics.unregister(cache)


class UnreachableBackend:
    """A backend whose stats() fails, as a cluster client's does when no shard answers."""

    def stats(self) -> dict:
        raise ShardUnavailableError("no replica of shard-0 answered", shard_id="shard-0")


def test_a_store_whose_stats_fail_is_down_and_the_scrape_still_answers(make_cache):
    cache = make_cache(threshold=0.9)
    cache.backend.stats = UnreachableBackend().stats  # this instance only
    registry = CollectorRegistry()
    metrics.register(cache, registry)
    cache.store("what is the capital of france", "Paris")
    found = samples(generate_latest(registry))
    assert value(found, "semcache_store_up", namespace="semcache") == 0
    assert ("semcache_store_entries", frozenset({("namespace", "semcache")})) not in found
    assert value(found, "semcache_cache_stores_total", namespace="semcache") == 1


class ClusterLikeBackend:
    """A backend whose stats() has the shape of DistributedSemanticKV's: per-shard stats of the leaders."""

    def stats(self) -> dict:
        return {
            "node": "cluster",
            "shards": {"shard-0": {"entries": 2, "value_bytes": 10, "puts": 4},
                       "shard-1": {"entries": 3, "value_bytes": 5, "puts": 1, "searches": 7}},
            "missing_shards": ["shard-2"],
            "entries": 5,
            "embedding_model_calls": 9,
        }


def test_a_cluster_client_store_is_the_sum_of_its_shards():
    registry = CollectorRegistry()
    metrics.register(ClusterLikeBackend(), registry)
    found = samples(generate_latest(registry))
    assert value(found, "semcache_store_entries", namespace="") == 5
    assert value(found, "semcache_store_bytes", namespace="") == 15
    assert value(found, "semcache_store_puts_total", namespace="") == 5
    assert value(found, "semcache_store_searches_total", namespace="") == 7
    assert value(found, "semcache_store_embedding_model_calls_total", namespace="") == 9
    assert value(found, "semcache_store_missing_shards", namespace="") == 1


def test_only_caches_and_backends_are_exported():
    with pytest.raises(InvalidInputError, match="SemanticCache or a backend"):
        metrics.CacheCollector(object())


def test_serve_metrics_answers_over_http_then_stops(make_cache):
    cache = make_cache(threshold=0.9)
    cache.store("what is the capital of france", "Paris")
    cache.lookup("what is the capital of france")
    server = metrics.serve_metrics(cache, 0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        reply = httpx.get(server.url, timeout=10)
        assert reply.status_code == 200
        found = samples(reply.text)
        assert value(found, "semcache_cache_hits_total", kind="exact", namespace="semcache") == 1
        assert value(found, "semcache_store_entries", namespace="semcache") == 1
    finally:
        server.close()
    server.close()  # idempotent
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url, timeout=2)


def test_serve_metrics_of_a_backend_alone():
    store = SemanticKV(embedding=HashEmbedding(dim=64))
    store.put("k", "v", text="some text")
    try:
        with metrics.serve_metrics(store, 0) as server:
            found = samples(httpx.get(server.url, timeout=10).text)
        assert value(found, "semcache_store_entries", namespace="") == 1
        assert not [key for key in found if key[0].startswith("semcache_cache_") and key[1]]
    finally:
        store.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
def test_serve_metrics_refuses_a_remote_host_unless_allowed(make_cache, host):
    with pytest.raises(ConfigurationError, match="allow_remote"):
        metrics.serve_metrics(make_cache(threshold=0.9), 0, host=host)


@pytest.mark.parametrize("port", [-1, 65536, "9100", 1.5, True])
def test_serve_metrics_refuses_a_bad_port(make_cache, port):
    with pytest.raises(ConfigurationError, match="port"):
        metrics.serve_metrics(make_cache(threshold=0.9), port)


def test_a_taken_port_is_a_configuration_error(make_cache):
    cache = make_cache(threshold=0.9)
    with metrics.serve_metrics(cache, 0) as server, pytest.raises(ConfigurationError, match="cannot serve"):
        metrics.serve_metrics(cache, server.port)


def test_without_prometheus_client_the_module_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if it were not installed\n"
        "import semcache\n"
        "try:\n"
        "    import semcache.metrics\n"
        "except semcache.MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "prometheus-client is needed for metrics: pip install 'semcache-llm[gateway]'"
