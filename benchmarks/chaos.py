"""Chaos benchmark: how long writes to a shard stop when its leader is killed, and how often elections happen.

Run:  .venv/bin/python benchmarks/chaos.py [--kills 6] [--writers 4] [--steady 60] [--hogs 0]

For each setting (``baseline``: followers wait out their election timeout and a
waiting client backs off up to 0.5 s, as before; ``fast``: a follower campaigns
as soon as its leader's connection drops, and clients ask again every 0.1 s at
most), it starts a 2-shard x 3-replica cluster of real node processes, then:

1. steady load: ``--writers`` threads put through a DistributedSemanticKV for
   ``--steady`` seconds (half the writers per shard); elections per minute =
   term increases over all shards (none is expected);
2. chaos: ``--kills`` times, kill -9 the leader of shard-0 under that load,
   measure the write gap (kill -> first acknowledgement of a write to shard-0
   that was started after the kill: a write in flight at the kill may have
   committed before it) and the
   longest pause between acknowledged writes on shard-1 meanwhile; restart the
   killed node and let it catch up.

Both settings run in the same command, one after the other, so they share the
machine's load.  Prints a table (p50 and max of the write gap over the kills).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._client import retry as retry
from semcache.cluster._local import LocalCluster
from semcache.errors import ClusterError

SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {"leader_loss_election": 0.0, "client_max_backoff": 0.5},
    "fast": {"leader_loss_election": 0.1, "client_max_backoff": 0.1},
    "fast, 0.6-1.2 s window": {"leader_loss_election": 0.1, "client_max_backoff": 0.1,
                               "election_timeout_min": 0.6, "election_timeout_max": 1.2},
}
@dataclass
class Acks:
    """Acknowledged writes per shard, as (started, acknowledged) monotonic seconds, appended by the writers."""

    by_shard: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, shard_id: str, started: float, acknowledged: float) -> None:
        with self.lock:
            self.by_shard.setdefault(shard_id, []).append((started, acknowledged))

    def first_started_after(self, shard_id: str, since: float) -> float | None:
        """When the first write started after ``since`` was acknowledged (None: none yet)."""
        with self.lock:
            return min((end for start, end in self.by_shard.get(shard_id, []) if start > since), default=None)

    def longest_pause(self, shard_id: str, start: float, end: float) -> float:
        with self.lock:
            acks = sorted(t for _, t in self.by_shard.get(shard_id, []) if start < t < end)
        points = [start, *acks, end]
        return max(b - a for a, b in zip(points, points[1:], strict=False))


class Writers:
    """``count`` threads putting to their own shard's keys until stopped."""

    def __init__(self, kv: DistributedSemanticKV, acks: Acks, count: int) -> None:
        self.kv, self.acks = kv, acks
        self.stop = threading.Event()
        shards = kv.shard_ids
        keys = [f"key-{i}" for i in range(2000)]
        self.own = [[k for k in keys if kv.shard_for(k) == shards[w % len(shards)]][:50] for w in range(count)]
        self.threads = [threading.Thread(target=self._run, args=(own,), daemon=True) for own in self.own]

    def _run(self, own: list[str]) -> None:
        shard_id = self.kv.shard_for(own[0])
        seq = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.kv.put(own[seq % len(own)], f"value {seq}")
                self.acks.add(shard_id, started, time.monotonic())
            except ClusterError:
                pass
            seq += 1

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def terms(cluster: LocalCluster) -> dict[str, int]:
    """The highest term each shard's replicas report."""
    health = cluster.health(timeout=2.0)
    return {shard.id: max(int(health[r.id].get("term") or 0) for r in shard.replicas)
            for shard in cluster.config().shards}


def leader_id(cluster: LocalCluster, shard_id: str) -> str:
    rpc = cluster.wait_for_leaders(60)[shard_id]
    return next(r.id for r in cluster.config().replicas() if r.rpc == rpc)


def run_setting(name: str, args: argparse.Namespace) -> dict[str, Any]:
    setting = SETTINGS[name]
    retry.MAX_BACKOFF = setting["client_max_backoff"]  # the client's module constant, for this run
    with tempfile.TemporaryDirectory() as directory:
        cluster = LocalCluster(directory)
        timing = {k: v for k, v in setting.items() if k != "client_max_backoff"}
        config = cluster.create(2, 3, embedding="hash:64", **timing)
        cluster.start_all()
        cluster.wait_for_leaders(60)
        kv = DistributedSemanticKV(cluster.addresses(), token=config.token, connection_timeout=1.0,
                                   request_timeout=30.0)
        acks = Acks()
        try:
            with Writers(kv, acks, args.writers):
                before = terms(cluster)
                time.sleep(args.steady)
                after = terms(cluster)
                elections = sum(after[s] - before[s] for s in before)
                gaps, other_pauses = [], []
                for _ in range(args.kills):
                    victim = leader_id(cluster, "shard-0")
                    killed_at = time.monotonic()
                    cluster.signal(victim, signal.SIGKILL)
                    deadline = killed_at + 60
                    while (resumed := acks.first_started_after("shard-0", killed_at)) is None:
                        if time.monotonic() > deadline:
                            raise ClusterError("shard-0 did not take writes again within 60 s")
                        time.sleep(0.005)
                    gaps.append(resumed - killed_at)
                    other_pauses.append(acks.longest_pause("shard-1", killed_at, resumed))
                    cluster.start(victim)
                    cluster.wait_caught_up(victim, 60)
                    time.sleep(args.settle)
        finally:
            kv.close()
            cluster.stop_all()
    return {
        "setting": name,
        "elections_per_minute": elections / (args.steady / 60),
        "gap_p50": statistics.median(gaps),
        "gap_max": max(gaps),
        "other_shard_pause_max": max(other_pauses),
        "gaps": gaps,
    }


def _hog(stop: Any) -> None:
    while not stop.is_set():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of load for elections per minute")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between a restart and the next kill")
    parser.add_argument("--hogs", type=int, default=0, help="busy-looping processes competing for the CPUs")
    parser.add_argument("--only", choices=list(SETTINGS), default=None)
    args = parser.parse_args()
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    try:
        results = [run_setting(name, args) for name in SETTINGS if args.only in (None, name)]
    finally:
        stop.set()
        for hog in hogs:
            hog.join(timeout=5)
    print(f"\nchaos: 2 shards x 3 replicas, {args.writers} writers, {args.kills} kills of shard-0's leader, "
          f"{args.steady:.0f} s steady load, {args.hogs} hogs; {platform.python_version()}, "
          f"{multiprocessing.cpu_count()} CPUs")
    print("| setting | elections / min (steady) | write gap p50 s | write gap max s | shard-1 longest pause s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['elections_per_minute']:.2f} | {r['gap_p50']:.2f} | {r['gap_max']:.2f} | "
              f"{r['other_shard_pause_max']:.2f} |")
    for r in results:
        print(f"{r['setting']} gaps: {', '.join(f'{g:.2f}' for g in r['gaps'])}")


if __name__ == "__main__":
    main()
