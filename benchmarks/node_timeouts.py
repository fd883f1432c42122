"""Measure Raft timing on this machine: election stability under load, and the compaction stall.

Run:  .venv/bin/python benchmarks/node_timeouts.py [--seconds 60] [--hogs 2]

Part 1 starts a 3-replica shard (real node processes) once with pysyncobj's
default election window (0.4-1.4 s) and once with semcache's (1.0-2.0 s),
then loads the machine: ``--hogs`` busy-looping processes plus 8 writer
threads doing sync puts through the leader.  It counts elections (term
increases) and reports write latency and the longest write stall.

Part 2 fills a shard with 384-dimension vectors (the MiniLM shape) past
several compactions, and reports how long each snapshot took on each replica
and the longest write stall while they ran.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import threading
import time
from typing import Any

import numpy as np
from pysyncobj.version import VERSION

from semcache.cluster._local import LocalCluster
from semcache.errors import ClusterError, NotLeaderError


def _hog(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def _vector(rng: np.random.Generator, dim: int) -> bytes:
    vec = rng.standard_normal(dim).astype(np.float32)
    return (vec / np.linalg.norm(vec)).astype(np.float32).tobytes()


def _next(addresses: list[str], current: str) -> str:
    return addresses[(addresses.index(current) + 1) % len(addresses)]


def run_load(cluster: LocalCluster, seconds: float, dim: int, value_bytes: int, writers: int = 8) -> dict[str, Any]:
    """Sync puts from ``writers`` threads through the current leader for ``seconds``."""
    latencies: list[float] = []
    failures = 0
    stop = threading.Event()
    lock = threading.Lock()
    addresses = [r.rpc for r in cluster.config().replicas()]

    def writer(worker: int) -> None:
        nonlocal failures
        rng = np.random.default_rng(worker)
        clients = {a: cluster.connect(a, timeout=10.0) for a in addresses}
        leader = addresses[0]
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                clients[leader].put(f"w{worker}-{i}", b"v" * value_bytes, scope="", vector=_vector(rng, dim), ttl_ms=0)
            except NotLeaderError as exc:  # a redirect, not a failure: follow it
                leader = exc.leader_hint if exc.leader_hint in clients else _next(addresses, leader)
                continue
            except ClusterError:
                leader = _next(addresses, leader)
                with lock:
                    failures += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
            i += 1
        for client in clients.values():
            client.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    latencies.sort()
    return {
        "writes": len(latencies),
        "failures": failures,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else float("nan"),
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
    }


def elections(seconds: float, hogs: int, window: tuple[float, float]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="semcache-timeouts-") as tmp:
        cluster = LocalCluster(tmp)
        cluster.create(1, 3, embedding="hash:64", election_timeout_min=window[0], election_timeout_max=window[1])
        cluster.start_all()
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=_hog, args=(stop,)) for _ in range(hogs)]
        try:
            cluster.wait_for_leaders(60)
            terms_before = {rid: h.get("term", 0) for rid, h in cluster.health().items()}
            for burner in burners:
                burner.start()
            load = run_load(cluster, seconds, 64, 200)
            health = cluster.health(timeout=10.0)
            terms_after = {rid: h.get("term", 0) for rid, h in health.items()}
            elections_seen = max(terms_after.values()) - max(terms_before.values())
        finally:
            stop.set()
            for burner in burners:
                burner.join(10)
            cluster.stop_all()
    return {"window": f"{window[0]}-{window[1]} s", "elections": elections_seen, **load}


def compaction(seconds: float, entries_per_snapshot: int, fork: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="semcache-compaction-") as tmp:
        cluster = LocalCluster(tmp)
        cluster.create(1, 3, embedding="all-MiniLM-L6-v2", compaction_entries=entries_per_snapshot,
                       fork_snapshots=fork)
        cluster.start_all()
        try:
            cluster.wait_for_leaders(60)
            terms_before = max(h.get("term", 0) for h in cluster.health().values())
            load = run_load(cluster, seconds, 384, 1000)
            health = cluster.health(timeout=10.0)
        finally:
            cluster.stop_all()
    return {
        **load,
        "elections": max(h.get("term", 0) for h in health.values()) - terms_before,
        "entries": max(h.get("entries", 0) for h in health.values()),
        "snapshots": {rid: h.get("snapshots") for rid, h in health.items()},
        "last_snapshot_s": {rid: h.get("last_snapshot_seconds") for rid, h in health.items()},
        "tick_stall_s": {rid: h.get("last_snapshot_stall_seconds") for rid, h in health.items()},
        "apply_pause_s": {rid: h.get("last_snapshot_apply_pause_seconds") for rid, h in health.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--compaction-entries", type=int, default=2000)
    parser.add_argument("--only", choices=("elections", "compaction"), default=None)
    args = parser.parse_args()
    print(f"# {platform.platform()}, {multiprocessing.cpu_count()} cores, python {platform.python_version()}, "
          f"pysyncobj {VERSION}")
    if args.only != "compaction":
        print(f"\n## elections under load: {args.hogs} CPU hogs + 8 sync writers, {args.seconds:.0f} s each")
        print("| election window | elections | writes | failed | p50 ms | p99 ms | longest stall ms |")
        print("|---|---|---|---|---|---|---|")
    for window in ((0.4, 1.4), (1.0, 2.0)) if args.only != "compaction" else ():
        row = elections(args.seconds, args.hogs, window)
        print(f"| {row['window']} | {row['elections']} | {row['writes']} | {row['failures']} | "
              f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} |", flush=True)
    if args.only != "elections":
        print(f"\n## compaction under load: dim 384, 1 KB values, snapshot every {args.compaction_entries} entries")
    runs = [("no snapshot (control)", 10**9, True), ("synchronous write", args.compaction_entries, False),
            ("forked child", args.compaction_entries, True)]
    for name, entries, fork in runs if args.only != "elections" else ():
        row = compaction(args.seconds, entries, fork)
        print(f"{name}: {row}", flush=True)


if __name__ == "__main__":
    main()
