"""``semcache node --metrics-port``: a real node process serves its store, Raft and request metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import ClusterHarness
from support.wait import WAIT, wait_until

from semcache.cluster._local import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples | None:
    """Every sample at ``url``, or None while nothing answers there."""
    try:
        reply = httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None
    reply.raise_for_status()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    """One shard of one replica, its node not started yet (the test starts it with its options)."""
    harness = ClusterHarness(tmp_path, shards=1, replicas=1)
    try:
        yield harness
    finally:
        harness.stop_all()


def test_a_node_serves_its_metrics(cluster: ClusterHarness):
    (replica,) = cluster.replicas("shard-0")
    (port,) = free_ports(1)
    cluster.processes[replica] = cluster.local.start(replica, extra_args=("--metrics-port", str(port)))
    cluster.local.wait_for_leaders(WAIT, watch=[replica])
    kv = cluster.client()
    for number in range(3):
        kv.put(f"key-{number}", f"value {number}", text=f"text number {number}")
    assert kv.get("key-0") == b"value 0"

    found = wait_until(lambda: scrape(f"http://127.0.0.1:{port}/metrics"), what="the node's /metrics")
    labels = {"shard": "shard-0", "replica": replica}

    def value(name: str, **more: str) -> float:
        return found[(name, frozenset({**labels, **more}.items()))]

    assert value("semcache_node_entries") == 3  # a write is acknowledged once applied here
    assert value("semcache_node_bytes") == len(b"value 0") * 3
    assert value("semcache_node_puts_total") == 3
    assert value("semcache_node_gets_total") == 1 and value("semcache_node_get_hits_total") == 1
    assert value("semcache_node_errors_total") == 0
    assert value("semcache_node_is_leader") == 1 and value("semcache_node_has_quorum") == 1
    assert value("semcache_node_raft_term") >= 1
    assert 1 <= value("semcache_node_applied_index") <= value("semcache_node_commit_index")
    assert value("semcache_node_commit_index") <= value("semcache_node_last_log_index")
    assert value("semcache_node_replica_lag", member=replica) == 0
    assert found[("process_resident_memory_bytes", frozenset())] > 0


def test_a_remote_metrics_host_needs_allow_remote_in_the_cluster_file(cluster: ClusterHarness):
    (replica,) = cluster.replicas("shard-0")
    (port,) = free_ports(1)
    process = cluster.local.start(replica, extra_args=("--metrics-port", str(port), "--metrics-host", "192.0.2.1"))
    cluster.processes[replica] = process
    assert process.wait(timeout=WAIT) == 1
    log = cluster.local.files.log_file(replica).read_text()
    assert "allow_remote" in log and "192.0.2.1" in log
