"""Node overhead against its baselines, measured in one run on one machine.

Run:  .venv/bin/python benchmarks/node_latency.py [--ops 2000]

Two 3-replica groups run side by side as real processes on 127.0.0.1:

* *raw*: a bare pysyncobj ``SyncObj`` (same settings as a semcache replica:
  password, no batching, same timeouts) whose one ``@replicated`` method
  stores bytes in a dict, behind a bare Flight server
  (``benchmarks.cluster.raw_flight_group``, shared with ``semcache bench --cluster``).  Its ``echo`` action is
  the raw Flight round trip; its ``commit`` action is a raw sync commit plus
  that round trip.
* *node*: a semcache shard (``python -m semcache.cluster._node``), ``--dim`` vectors (384, MiniLM's).

Reported: p50/p99 of GET vs raw echo, sync PUT vs raw commit, and the
throughput of 8 concurrent writers (threads sharing one ``DistributedSemanticKV``,
which coalesces their puts, and, for reference, 8 ``NodeClient`` connections
sending one put per call), with the ratios the issue targets.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.flight as flight

from benchmarks.cluster import interleaved, raw_flight_group, wait_indexed
from semcache._cli.latency import Summary
from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._local import LocalCluster
from semcache.embeddings import HashEmbedding
from semcache.errors import NotLeaderError


# ------------------------------------------------------------------- timing
def throughput(fn: Callable[[int, int], Any], seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = threading.Event()

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            fn(n, i)
            i += 1
        done[n] = i

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join(30)
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="length of each throughput run; short enough to stay within the index backlog")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--token", default="bench-token", help="RPC token the nodes require (\"\" for none)")
    parser.add_argument("--index-backlog", type=int, default=None,
                        help="deferred hnswlib inserts, all scopes (cluster file index_backlog; 0 inserts at once)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.ops, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    value = b"x" * 100
    with (
        raw_flight_group() as (raw, raw_leader_address),
        tempfile.TemporaryDirectory(prefix="semcache-latency-") as tmp,
    ):
        cluster = LocalCluster(tmp)
        settings = {} if args.index_backlog is None else {"index_backlog": args.index_backlog}
        cluster.create(1, 3, embedding=f"hash:{args.dim}", token=args.token, **settings)
        cluster.start_all()
        try:
            leader_address = next(iter(cluster.wait_for_leaders(60).values()))
            node = cluster.connect(leader_address, timeout=10.0)
            local = list(raw.do_action(flight.Action("commit_local", str(args.ops).encode())))[0]
            payload = value + vectors[0].tobytes()
            # The raw op, then the node's, op by op.
            rows: dict[str, Summary] = {}
            rows["raw commit + round trip"], others = interleaved(
                lambda i: list(raw.do_action(flight.Action("commit", b"%016d" % i + payload))),
                {"node sync PUT": lambda i: node.put(f"key-{i}", value, scope="", vector=vectors[i].tobytes(),
                                                     ttl_ms=0)},
                args.ops)
            rows |= others
            rows["raw Flight round trip"], others = interleaved(
                lambda i: list(raw.do_action(flight.Action("echo", b"k%d" % i))),
                {"node GET (hit)": lambda i: node.get(f"key-{i}")}, args.ops)
            rows |= others
            rows["raw pysyncobj commit (in leader)"] = Summary.of(np.frombuffer(local.body.to_pybytes()).tolist())
            clients = [cluster.connect(leader_address, timeout=10.0) for _ in range(8)]
            raws = [flight.FlightClient(raw_leader_address) for _ in range(8)]
            kv = DistributedSemanticKV(cluster.addresses(), token=args.token or None,
                                       embedding=HashEmbedding(args.dim))
            wait_indexed(kv)  # each burst starts from an indexed shard, within the index backlog
            raw_tput = throughput(
                lambda n, i: list(raws[n].do_action(flight.Action("commit", b"%08d%08d" % (n, i) + payload))),
                args.seconds)
            wait_indexed(kv)
            node_tput_direct = throughput(
                lambda n, i: clients[n].put(f"t{n}-{i}", value, scope="", vector=vectors[i % args.ops].tobytes(),
                                            ttl_ms=0), args.seconds)
            wait_indexed(kv)
            node_tput = throughput(lambda n, i: kv.put(f"c{n}-{i}", value, vector=vectors[i % args.ops]), args.seconds)
            kv.close()
        except NotLeaderError as exc:
            raise SystemExit(f"leadership moved during the benchmark ({exc}); run it again") from exc
        finally:
            cluster.stop_all()
    print(f"# {platform.platform()}, python {platform.python_version()}; {args.ops} sequential ops, "
          f"8 threads for {args.seconds:.0f} s; 100-byte values, {args.dim}-dim vectors; 1 shard x 3 replicas; "
          f"token {'on' if args.token else 'off'}")
    print("| operation | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row.median * 1e3:.3f} | {row.p90 * 1e3:.3f} | {row.p99 * 1e3:.3f} | {row.max * 1e3:.1f} |")
    med = {name: row.median for name, row in rows.items()}
    get_ratio = med["node GET (hit)"] / med["raw Flight round trip"]
    print(f"\nGET p50 / raw round trip p50 = {get_ratio:.2f} (target <= 1.5)")
    print(f"PUT p50 / (raw commit + round trip) p50 = "
          f"{med['node sync PUT'] / med['raw commit + round trip']:.2f} (target <= 1.5)")
    print(f"8-thread PUT throughput: node {node_tput:.0f} ops/s (one DistributedSemanticKV, coalescing), "
          f"raw {raw_tput:.0f} ops/s, ratio {node_tput / raw_tput:.2f} (target >= 0.7)")
    print(f"  (8 NodeClients, one put per call: {node_tput_direct:.0f} ops/s, ratio {node_tput_direct / raw_tput:.2f})")


if __name__ == "__main__":
    main()
