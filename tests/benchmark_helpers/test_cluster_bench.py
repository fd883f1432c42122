"""The cluster benchmark's report: ratios against the same-run baselines and verdicts (no cluster needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.cluster import ClusterBenchReport, Row, format_report, interleaved, latencies, run, throughput
from semcache._cli.latency import Summary


def summary(ms: float) -> Summary:
    return Summary(100, ms / 1000, ms / 1000, ms / 1000, ms / 1000)


def report(get_ms: float, put_ms: float, put_ops: float, search_ops: float) -> ClusterBenchReport:
    rows = [
        Row("GET", 10_000, summary(get_ms), 1000.0),
        Row("PUT", 10_000, summary(put_ms), put_ops, put_ops / 2),
        Row("SEARCH", 10_000, summary(2.0), search_ops),
        Row("DELETE", 10_000, summary(3.0), 300.0),
    ]
    return ClusterBenchReport(rows, summary(0.4), summary(1.6), 700.0, {"cpu": "test"}, summary(2.0), 500.0)


def test_ratios_are_against_the_baselines_of_the_same_run() -> None:
    text = format_report(report(get_ms=0.5, put_ms=2.5, put_ops=560.0, search_ops=500.0))
    assert "| GET p50 vs raw Flight RTT | 0.50 ms vs 0.40 ms | 1.25x | <= 1.5x | met |" in text
    assert "| sync PUT p50 vs raw commit + RTT | 2.50 ms vs 2.00 ms | 1.25x | <= 1.5x | met |" in text
    assert "560 vs 700 ops/s | 0.80x | >= 0.7x | met |" in text
    assert "| SEARCH at 10,000 keys, 8 threads | 500 ops/s | 1.09x |" in text and "- cpu: test" in text
    # The burst's rate including the replicas' deferred inserts is shown beside it, without a verdict.
    assert "indexed it, vs raw pysyncobj | 280 vs 700 ops/s | 0.40x | no target |" in text
    assert "| PUT | 10,000 | 2.50 | 2.50 | 2.50 | 400 | 560 | 280 |" in text
    # A second reading of the write targets: the raw group reached through one Flight call, as a node is.
    assert "| raw pysyncobj commit through one Flight call (1 thread / 8 threads) | 2.00 | 2.00 | 500 / 500 |" in text
    assert (
        "| (same transport) sync PUT p50 vs raw commit through Flight | 2.50 ms vs 2.00 ms | 1.25x | <= 1.5x | met |"
        in text
    )
    assert "| (same transport) PUT throughput (8 threads) vs raw through Flight | 560 vs 500 ops/s | 1.12x |" in text


def test_a_missed_target_says_so() -> None:
    text = format_report(report(get_ms=0.7, put_ms=9.0, put_ops=100.0, search_ops=400.0))
    assert text.count("MISSED") == 6 and "| met |" not in text


def test_latency_and_throughput_helpers_call_every_index() -> None:
    seen: list[int] = []
    assert latencies(seen.append, 5).count == 5 and seen == [0, 1, 2, 3, 4]
    order: list[str] = []
    subject, others = interleaved(
        lambda i: order.append(f"s{i}"),
        {"a": lambda i: order.append(f"a{i}") or 0.25, "b": lambda i: order.append(f"b{i}") or b"not a duration"},
        4,
    )
    # rounds of two subject calls, then a and b in turns: each series follows the other side in half its calls
    assert order == ["s0", "s1", "a0", "b0", "s2", "s3", "b1", "a1"]
    assert subject.count == 4 and others["a"].count == others["b"].count == 2
    assert others["a"].median == 0.25  # a returned float is the duration it measured itself
    assert others["b"].median < 0.01  # anything else is timed
    order.clear()
    interleaved(lambda i: order.append(f"s{i}"), {"a": lambda i: order.append(f"a{i}")}, 3)
    assert order == ["s0", "a0", "s1", "a1", "s2", "a2"]  # one other series: plain alternation
    got: list[int] = []
    assert throughput(got.append, 40, threads=4) > 0 and sorted(got) == list(range(40))



def test_without_the_flight_baseline_the_second_reading_is_left_out() -> None:
    bare = report(get_ms=0.5, put_ms=2.5, put_ops=560.0, search_ops=500.0)
    bare.raft_via_flight = bare.raft_via_flight_ops_per_second = None
    text = format_report(bare)
    assert "(same transport)" not in text and "through one Flight call" not in text


@pytest.mark.slow
def test_a_small_run_measures_every_row_beside_the_raw_group_and_stops_everything() -> None:
    before = _bench_processes()
    report = run((150,), ops=20, progress=lambda message: None)
    assert [(r.op, r.keys) for r in report.rows] == [
        ("GET", 150), ("PUT", 150), ("PUT overwrite", 150), ("SEARCH", 150), ("DELETE", 150),
    ]
    assert all(r.latency.count == 20 and r.ops_per_second > 0 for r in report.rows)
    # The GETs alternate with echoes; the PUTs with the two kinds of raw commit in turn.
    assert report.flight_rtt.count == 20 and report.raft_commit.count == 10 and report.raft_ops_per_second > 0
    assert report.raft_via_flight is not None and report.raft_via_flight_ops_per_second
    assert "sync PUT p50 vs raw commit + RTT" in format_report(report)
    assert _bench_processes() == before  # the raw groups and the nodes were stopped


def _bench_processes() -> set[int]:
    """Pids of this test process's children that are raw-group or node processes (by their command lines).

    Only children count: other clusters may be running on the machine meanwhile.
    """
    pids = set()
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if parent == me and (b"raw-flight-node" in cmdline or (b"semcache" in cmdline and b"--replica" in cmdline)):
            pids.add(int(proc.name))
    return pids
