"""Snapshot transfer benchmark: how fast a wiped replica of a large shard rejoins, under a write load.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/snapshot_transfer.py --sizes 50,200 [--writers 1] [--value-kb 40]

For each size it starts a 1-shard x 3-replica cluster of real node processes on
127.0.0.1 (``--embedding hash:64``), then:

1. loads ``size`` MB of values (``--value-kb`` each, random bytes) through a
   DistributedSemanticKV, and asks the leader for a snapshot (the admin
   ``compact`` action), so the log a new replica would need is gone;
2. stops a follower, deletes its data directory, starts ``--writers`` threads
   putting 1 KB values, and starts the follower again;
3. waits until the follower has applied everything the leader had committed
   when it restarted and no longer reports itself catching up (``rejoin``); MB/s
   is the leader's snapshot file over that time;
4. stops the writers and waits until every replica has the same state digest.

Prints one row per size: the snapshot file's size, the time to rejoin, MB/s,
whether the digests were equal, the writes acknowledged meanwhile, and elections
(term increases) during the rejoin.  The issue 11 target is a 1 GB shard
rejoining at >= 50 MB/s on loopback; this script, not a test, checks it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._flight import NodeClient
from semcache.cluster._local import LocalCluster
from semcache.cluster._raft.snapshots import SNAPSHOT_FILE
from semcache.errors import ClusterError

MB = 1_000_000
POLL = 0.25


@dataclass
class Row:
    """One size's outcome."""

    target_mb: int
    snapshot_mb: float
    load_seconds: float
    rejoin_seconds: float | None
    digest_equal: bool
    writes_during: int
    elections: int
    note: str = ""

    def cells(self) -> list[str]:
        rate = "-" if not self.rejoin_seconds else f"{self.snapshot_mb / self.rejoin_seconds:.1f}"
        rejoin = "never" if self.rejoin_seconds is None else f"{self.rejoin_seconds:.1f}"
        return [str(self.target_mb), f"{self.snapshot_mb:.0f}", f"{self.load_seconds:.0f}", rejoin, rate,
                "yes" if self.digest_equal else "NO", str(self.writes_during), str(self.elections), self.note]


HEADERS = ["target MB", "snapshot MB", "load s", "rejoin s", "MB/s", "digest equal", "writes meanwhile",
           "elections", "note"]


class Writers:
    """``count`` threads putting 1 KB values until stopped; counts the acknowledged ones."""

    def __init__(self, kv: DistributedSemanticKV, count: int) -> None:
        self.kv = kv
        self.acknowledged = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(count)]

    def _run(self, writer: int) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.kv.put(f"load-{writer}-{i % 500}", os.urandom(1000))
                with self._lock:
                    self.acknowledged += 1
            except ClusterError:
                time.sleep(0.05)
            i += 1

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def admin(cluster: LocalCluster, replica_id: str, timeout: float = 5.0) -> NodeClient:
    config = cluster.config()
    return NodeClient(config.replica(replica_id).rpc, token=config.admin_token or config.token or None,
                      timeout=timeout)


def health(cluster: LocalCluster, replica_id: str) -> dict[str, Any] | None:
    try:
        with admin(cluster, replica_id, timeout=2.0) as node:
            return node.health()
    except ClusterError:
        return None


def leader(cluster: LocalCluster) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for replica in cluster.config().replicas():
            h = health(cluster, replica.id)
            if h and h.get("role") == "leader" and h.get("has_quorum"):
                return replica.id
        time.sleep(POLL)
    raise TimeoutError("no leader")


def load(kv: DistributedSemanticKV, megabytes: int, value_bytes: int) -> None:
    """Put ``megabytes`` of random values in batches (the client splits them into put_many requests)."""
    count = megabytes * MB // value_bytes
    batch = 256
    for start in range(0, count, batch):
        end = min(count, start + batch)
        items = [(f"big-{i:07d}", os.urandom(value_bytes), f"big value {i}") for i in range(start, end)]
        kv.put_many(items)


def snapshot(cluster: LocalCluster, leader_id: str, timeout: float) -> Path:
    """Ask the leader for a snapshot and wait until it has written one; its file."""
    before = int((health(cluster, leader_id) or {}).get("snapshots", 0))
    with admin(cluster, leader_id) as node:
        node.call("compact", {})
    deadline = time.monotonic() + timeout
    while int((health(cluster, leader_id) or {}).get("snapshots", 0)) <= before:
        if time.monotonic() > deadline:
            raise TimeoutError("the leader wrote no snapshot")
        time.sleep(POLL)
    return cluster.config().data_dir_of(leader_id) / SNAPSHOT_FILE


def digests(cluster: LocalCluster) -> set[str | None]:
    out: set[str | None] = set()
    for replica in cluster.config().replicas():
        try:
            with admin(cluster, replica.id) as node:
                out.add(str(node.digest()["digest"]))
        except ClusterError:
            out.add(None)
    return out


def wait_rejoined(cluster: LocalCluster, replica_id: str, target: int, timeout: float) -> float | None:
    """Seconds until ``replica_id`` applied ``target`` and says it is not catching up; None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        h = health(cluster, replica_id)
        if h and int(h.get("applied") or 0) >= target and not h.get("catching_up"):
            return time.monotonic() - started
        time.sleep(POLL)
    return None


def terms(cluster: LocalCluster) -> int:
    return max(int((health(cluster, r.id) or {}).get("term") or 0) for r in cluster.config().replicas())


def run_size(megabytes: int, args: argparse.Namespace, root: Path) -> Row:
    cluster = LocalCluster(root / f"size-{megabytes}")
    # No compaction while loading (the one snapshot is asked for); the node's own defaults otherwise.
    cluster.create(1, 3, embedding="hash:64", compaction_entries=10_000_000, compaction_seconds=86_400.0)
    try:
        cluster.start_all()
        cluster.wait_for_leaders(60)
        config = cluster.config()
        kv = DistributedSemanticKV(cluster.addresses(), token=config.token or None, request_timeout=60.0)
        try:
            started = time.monotonic()
            load(kv, megabytes, args.value_kb * 1000)
            lead = leader(cluster)
            snapshot_file = snapshot(cluster, lead, timeout=args.timeout)
            load_seconds = time.monotonic() - started
            snapshot_mb = snapshot_file.stat().st_size / MB
            wiped = next(r.id for r in config.replicas() if r.id != lead)
            cluster.stop(wiped)
            shutil.rmtree(config.data_dir_of(wiped))
            term_before = terms(cluster)
            with Writers(kv, args.writers) as writers:
                target = int((health(cluster, lead) or {}).get("commit_index") or 0)
                cluster.start(wiped)
                rejoin = wait_rejoined(cluster, wiped, target, args.timeout)
                written = writers.acknowledged
            elections = terms(cluster) - term_before
            deadline = time.monotonic() + 120
            equal = False
            while rejoin is not None and time.monotonic() < deadline and not equal:
                found = digests(cluster)
                equal = len(found) == 1 and None not in found
                time.sleep(POLL)
            note = "" if rejoin is not None else f"not rejoined after {args.timeout:.0f}s"
            return Row(megabytes, snapshot_mb, load_seconds, rejoin, equal, written, elections, note)
        finally:
            kv.close()
    finally:
        cluster.stop_all(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="MB of values to load, comma-separated")
    parser.add_argument("--writers", type=int, default=1, help="threads writing while the replica rejoins")
    parser.add_argument("--value-kb", type=int, default=40, help="size of each loaded value, KB")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a rejoin")
    parser.add_argument("--dir", default=None, help="where the clusters live (default: a temporary directory)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="snapshot-bench-"))
    rows = []
    try:
        for megabytes in sizes:
            row = run_size(megabytes, args, root)
            rows.append(row)
            print(" | ".join(row.cells()), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{args.writers} writer(s) during the rejoin, values of {args.value_kb} KB\n")
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "---|" * len(HEADERS))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


if __name__ == "__main__":
    main()
