"""The cluster benchmark behind ``semcache bench --cluster``.

It starts a local cluster (2 shards × 3 replicas of node processes on
127.0.0.1) and reproduces the seed's table (GET, PUT, DELETE, SEARCH at 1K and
10K keys, one thread and 8 threads).  Beside the cluster run **raw groups** of
the same shape, one per shard: 3 processes each, each a bare pysyncobj
``SyncObj`` (same settings as a node: password, journal on disk, same election
timeouts; one ``@replicated`` method storing bytes in a dict) behind a bare
Flight server.  Every raw latency call goes to a group drawn at random, as
keys spread over shards; the throughput bursts split evenly between the
groups.  The baselines the targets are stated against come from them,
measured *interleaved* with the cluster's rows, because this shared machine's
speed drifts by tens of percent within minutes:

* **raw Flight round trip**: its ``echo`` action; every GET is followed by one;
* **raw pysyncobj commit**: one sync commit timed inside a leader; sync PUTs
  go in pairs, each pair followed by a raw commit of this kind and one of the
  next kind, in turns (see :func:`interleaved`).  For throughput, 8 threads
  committing inside the leaders (4 in each), run just before and just after
  the cluster's 8-thread PUT burst (the mean of the two);
* **raw commit through Flight**: a sync commit requested through one Flight
  call, as a node is reached (a second reading of both write targets), timed
  and bracketed the same way.

Every raw commit carries a PUT command's bulk: the value plus a random 384-dim
unit vector.  pysyncobj compresses its messages, and a constant vector would
make the raw messages about 20 times smaller than a node's.  Vectors are
precomputed, so the figures are the store's, not the embedder's.  Targets
(benchmark, not tests):

* GET p50 ≤ 1.5 × raw Flight RTT;
* sync PUT p50 ≤ 1.5 × (raw commit p50 + raw Flight RTT p50);
* pipelined PUT throughput (8 threads) ≥ 0.7 × raw pysyncobj (8 threads);
* SEARCH at 10K keys with 8 threads ≥ 460 ops/s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.embedded import unit_vectors
from semcache._cli.latency import Summary
from semcache.cluster._local import LocalCluster, free_ports

DIM = 384
VALUE_BYTES = 200
VALUE = b"v" * VALUE_BYTES
THREADS = 8
SHARDS = 2  # the cluster's shape, 3 replicas each; the raw baseline has one raw group per shard
DEFAULT_SIZES = (1_000, 10_000)
TARGETS = {"get": 1.5, "put": 1.5, "pipelined_put": 0.7, "search_ops": 460.0}


@dataclass(frozen=True)
class Row:
    """One line of the table: latency of one thread, throughput of ``THREADS`` threads."""

    op: str
    keys: int
    latency: Summary
    ops_per_second: float
    # The same burst, timed until every replica has also run the hnswlib inserts
    # it deferred (writes only): what a write load can sustain on these cores.
    indexed_ops_per_second: float | None = None


@dataclass
class ClusterBenchReport:
    """The rows, and the raw groups' baselines measured beside the largest size's rows."""

    rows: list[Row]
    flight_rtt: Summary
    raft_commit: Summary
    raft_ops_per_second: float
    environment: dict[str, str] = field(default_factory=dict)
    # The same raw groups reached through a Flight call, as a node is reached (None: not measured).
    raft_via_flight: Summary | None = None
    raft_via_flight_ops_per_second: float | None = None

    def row(self, op: str, keys: int) -> Row:
        return next(r for r in self.rows if r.op == op and r.keys == keys)


# ------------------------------------------------------------ measuring
def latencies(fn: Callable[[int], Any], count: int) -> Summary:
    """``fn(i)`` for i in range(count), one at a time: per-call latency."""
    samples = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return Summary.of(samples)


def interleaved(subject: Callable[[int], Any], others: dict[str, Callable[[int], Any]],
                count: int) -> tuple[Summary, dict[str, Summary]]:
    """Time ``subject`` ``count`` times, with ``others`` (the other system's series) in between.

    Alternating makes drift in this shared machine's speed hit every series
    alike.  The calls go in rounds: as many subject calls as there are others,
    then each of the others once, in an order rotated every round (with others
    ``a`` and ``b``: s s a b, s s b a, ...).  So every series follows the other
    system in the same share of its calls: a call that does pays for waking the
    processes the other system's calls left idle (0.3-0.4 ms here, measured),
    and a plain alternation charged that to whichever series came first.
    Each series' calls get indices 0, 1, 2...  A function that returns a float
    returns the duration it measured itself (a commit timed inside the raw
    leader); any other call is timed here.
    """
    def timed(fn: Callable[[int], Any], i: int) -> float:
        start = time.perf_counter()
        own = fn(i)
        return own if isinstance(own, float) else time.perf_counter() - start

    names = list(others)
    samples: dict[str, list[float]] = {name: [] for name in names}
    subject_samples: list[float] = []
    turn = 0
    while len(subject_samples) < count:
        for _ in range(min(len(names), count - len(subject_samples))):
            subject_samples.append(timed(subject, len(subject_samples)))
        for name in names[turn:] + names[:turn]:
            samples[name].append(timed(others[name], len(samples[name])))
        turn = (turn + 1) % len(names)
    return Summary.of(subject_samples), {name: Summary.of(values) for name, values in samples.items()}


def wait_indexed(kv: Any, timeout: float = 300.0) -> float:
    """Block until no replica has deferred hnswlib inserts left; return the seconds waited.

    Each phase starts from an indexed cluster, so one phase's background
    inserts do not take the CPU of the next one's measurement.
    """
    start = time.perf_counter()
    while True:
        queued = sum(
            int(health.get("index_queue") or 0) for shard in kv.cluster_stats().values() for health in shard.values()
        )
        if not queued:
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{queued} deferred index inserts still queued after {timeout:.0f} s")
        time.sleep(0.02)


def throughput(fn: Callable[[int], Any], count: int, threads: int = THREADS) -> float:
    """Calls per second of ``fn(i)`` for i in range(count) spread over ``threads`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fn, range(count)))
    return count / (time.perf_counter() - start)


# ------------------------------------------------------------ baselines
def put_payload() -> bytes:
    """What a raw commit carries: a PUT's value plus one random unit vector, as a node's Raft entry does.

    The vector must be a real one: pysyncobj zlib-compresses every message, and
    a constant vector (the first version of this benchmark) shrinks about 20
    times, which made the raw groups' messages far cheaper than a node's.
    """
    return VALUE + unit_vectors(np.random.default_rng(7), 1, DIM)[0].tobytes()


# The checkout holding this benchmarks package: raw-group processes import it from there.
CHECKOUT = Path(__file__).resolve().parent.parent


def _python_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


@contextlib.contextmanager
def _processes(commands: Sequence[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = [
        subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=_python_env())
        for c in commands
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(timeout=10)


def all_partners_connected(store: Any) -> bool:
    """Whether a raw group member is connected to every partner: a commit measured before
    would need one follower fewer, and be cheaper than a node's."""
    return all(store.isNodeConnected(node) for node in store.otherNodes)


def raw_flight_node(raft_port: int, partner_ports: list[int], rpc_port: int, secret: str, journal: str) -> None:
    """One replica of the raw group: a bare pysyncobj ``SyncObj`` behind a bare Flight server (its own process).

    Actions: ``echo`` (a round trip), ``role``, ``commit`` (one sync commit of
    the request body, so a client times a raw commit reached as a node is
    reached), ``commit_local`` (n sync commits timed inside the leader; their
    durations) and ``commit_threads`` (body ``"n t"``: n sync commits from t
    threads inside the leader; commits per second).
    """
    import pyarrow.flight as flight
    from pysyncobj import SyncObj, SyncObjConf, replicated

    from semcache.cluster._config import DEFAULT_ELECTION_MAX, DEFAULT_ELECTION_MIN, DEFAULT_HEARTBEAT

    class Store(SyncObj):
        def __init__(self) -> None:
            self.data: dict[bytes, bytes] = {}
            conf = SyncObjConf(
                password=secret, appendEntriesUseBatch=False, appendEntriesPeriod=DEFAULT_HEARTBEAT,
                raftMinTimeout=DEFAULT_ELECTION_MIN, raftMaxTimeout=DEFAULT_ELECTION_MAX,
                bindAddress=f"127.0.0.1:{raft_port}", commandsWaitLeader=False, journalFile=journal,
            )
            super().__init__(f"127.0.0.1:{raft_port}", [f"127.0.0.1:{p}" for p in partner_ports], conf)

        @replicated
        def set(self, key: bytes, value: bytes) -> bool:
            self.data[key] = value
            return True

    store = Store()
    payload = put_payload()
    commits = iter(range(1 << 62))  # keys of local commits, never reused

    def commit_local(_: int = 0) -> float:
        started = time.perf_counter()
        store.set(b"local%d" % next(commits), payload, sync=True, timeout=5.0)
        return time.perf_counter() - started

    class Server(flight.FlightServerBase):
        def do_action(self, context: Any, action: Any) -> list[Any]:
            body = action.body.to_pybytes()
            if action.type == "echo":
                return [flight.Result(body)]
            if action.type == "role":  # "leader" once it can reach both followers, as a node's commits do
                leads = store._isLeader() and all_partners_connected(store)
                return [flight.Result(b"leader" if leads else b"follower")]
            if action.type == "commit":
                store.set(body[:16], body, sync=True, timeout=5.0)
                return [flight.Result(b"ok")]
            if action.type == "commit_local":
                durations = [commit_local() for _ in range(int(body))]
                return [flight.Result(np.array(durations).tobytes())]
            if action.type == "commit_threads":  # body: "count threads"
                count, threads = (int(n) for n in body.split())
                return [flight.Result(str(throughput(commit_local, count, threads)).encode())]
            raise flight.FlightServerError(f"unknown action {action.type}")

    Server(f"grpc://127.0.0.1:{rpc_port}").serve()


@contextlib.contextmanager
def raw_flight_groups(groups: int = 1, secret: str = "bench-secret") -> Iterator[list[tuple[Any, str]]]:
    """Start ``groups`` raw groups of 3 processes; yield ``(FlightClient to its leader, the leader's address)`` each."""
    import pyarrow.flight as flight

    ports = free_ports(6 * groups)
    with tempfile.TemporaryDirectory(prefix="semcache-raw-group-") as journals:
        members = []  # the rpc ports of each group
        commands = []
        for g in range(groups):
            raft, rpc = ports[6 * g:6 * g + 3], ports[6 * g + 3:6 * g + 6]
            members.append(rpc)
            commands += [
                [sys.executable, "-m", "benchmarks.cluster", "raw-flight-node", "--raft-port", str(raft[i]),
                 "--partners", ",".join(str(p) for p in raft if p != raft[i]), "--rpc-port", str(rpc[i]),
                 "--secret", secret, "--journal", str(Path(journals) / f"journal-{g}-{i}")]
                for i in range(3)
            ]
        with _processes(commands):
            leaders: list[tuple[Any, str]] = []
            try:
                for rpc in members:
                    leaders.append(_raw_leader(rpc, flight))
                yield leaders
            finally:
                for client, _ in leaders:
                    client.close()


@contextlib.contextmanager
def raw_flight_group(secret: str = "bench-secret") -> Iterator[tuple[Any, str]]:
    """One raw group: ``(FlightClient to its leader, the leader's address)``."""
    with raw_flight_groups(1, secret) as (leader,):
        yield leader


def _raw_leader(rpc_ports: list[int], flight: Any, timeout: float = 60.0) -> tuple[Any, str]:
    """A FlightClient to the member of one raw group that leads it and reaches both followers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in rpc_ports:
            address = f"grpc://127.0.0.1:{port}"
            client = flight.FlightClient(address)
            try:
                if list(client.do_action(flight.Action("role", b"")))[0].body.to_pybytes() == b"leader":
                    return client, address
            except flight.FlightError:
                pass
            client.close()
        time.sleep(0.2)
    raise TimeoutError("a raw group behind Flight elected no leader")


class RawGroups:
    """The raw groups' operations, as the phases interleave them with the cluster's.

    One group per shard: each call goes to a group drawn at random (seeded),
    as the cluster's keys spread over its shards, so a raw call meets a group
    its previous call left idle as often as a PUT meets an idle shard.
    """

    def __init__(self, leaders: list[tuple[Any, str]], seed: int = 11) -> None:
        import pyarrow.flight as flight

        self._flight = flight
        self._leaders = leaders
        self._draw = random.Random(seed)
        self._payload = put_payload()
        self._sent = iter(range(1 << 62))  # keys of commits through Flight, never reused
        for _ in range(50):  # warm the connections, the journals and the followers
            for client, _address in leaders:
                self.commit(client=client)

    def _client(self) -> Any:
        return self._draw.choice(self._leaders)[0]

    def _call(self, action: str, body: bytes, client: Any = None) -> bytes:
        result = list((client or self._client()).do_action(self._flight.Action(action, body)))
        return bytes(result[0].body.to_pybytes())

    def echo(self, _: int = 0) -> None:
        """A bare Flight round trip with a GET request's size (its header; see docs/internals/wire-format.md)."""
        self._call("echo", b'{"wire_version":2,"key":"key:000123","read_from":"leader"}')

    def commit(self, _: int = 0, client: Any = None) -> None:
        """One sync commit requested through a Flight call."""
        self._call("commit", b"%016d" % next(self._sent) + self._payload, client)

    def commit_in_leader(self, _: int = 0) -> float:
        """One sync commit, timed inside the leader (the request's round trip is not counted)."""
        return float(np.frombuffer(self._call("commit_local", b"1"))[0])

    def in_leader_throughput(self, count: int) -> float:
        """Commits per second of ``THREADS`` threads committing inside the leaders (split evenly, all at once).

        Timed around the leaders' calls: two Flight calls and a thread start
        add about a millisecond to a burst of about a second.
        """
        share, threads = count // len(self._leaders), max(1, THREADS // len(self._leaders))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(self._leaders)) as pool:
            list(pool.map(lambda leader: self._call("commit_threads", b"%d %d" % (share, threads), leader[0]),
                          self._leaders))
        return share * len(self._leaders) / (time.perf_counter() - started)

    def through_flight_throughput(self, count: int) -> float:
        """Commits per second of ``THREADS`` threads, each with its own Flight connection to every leader."""
        clients = [[self._flight.FlightClient(address) for _, address in self._leaders] for _ in range(THREADS)]
        draws = [self._draw.randrange(len(self._leaders)) for _ in range(count)]
        try:
            return throughput(lambda i: self.commit(i, clients[i % THREADS][draws[i]]), count)
        finally:
            for row in clients:
                for client in row:
                    client.close()


# ------------------------------------------------------------- the run
@dataclass
class Baselines:
    """The raw groups' figures measured beside one size's rows."""

    flight_rtt: Summary
    raft_commit: Summary
    raft_ops_per_second: float
    raft_via_flight: Summary
    raft_via_flight_ops_per_second: float


def measure_size(
    kv: Any, size: int, vectors: np.ndarray, queries: np.ndarray, ops: int, raw: RawGroups
) -> tuple[list[Row], Baselines]:
    """GET, PUT (new key), PUT overwrite, SEARCH and DELETE rows on a cluster holding ``key:000000`` .. ``size - 1``,
    and the raw groups' baselines measured beside the GET and PUT rows."""

    def spread(i: int) -> int:
        return (i * 7919) % size  # a prime stride visits keys of both shards in no cache-friendly order

    def get(i: int) -> Any:
        kv.get(f"key:{spread(i):06d}")

    def put(i: int) -> Any:  # a new key (an insert)
        kv.put(f"put:{size}:{i}", VALUE, vector=queries[i % len(queries)])

    def overwrite(i: int) -> Any:  # an existing key gets a new value and vector
        kv.put(f"key:{spread(i):06d}", VALUE, vector=vectors[spread(i + 1)])

    def search(i: int) -> Any:
        kv.search(None, top_k=5, vector=queries[i % len(queries)])

    def doomed(i: int) -> Any:
        kv.put(f"gone:{size}:{i}", VALUE, vector=queries[i % len(queries)])

    def delete(i: int) -> Any:
        kv.delete(f"gone:{size}:{i}")

    def after(fn: Callable[[int], Any]) -> Callable[[int], Any]:
        return lambda i: fn(ops + i)  # throughput runs on calls ops.., so PUT keys stay new

    beside: dict[str, Summary] = {}
    bracket: list[tuple[float, float]] = []

    def raw_bursts() -> None:
        bracket.append((raw.in_leader_throughput(ops * 2), raw.through_flight_throughput(ops * 2)))

    def phase(name: str, fn: Callable[[int], Any], writes: bool,
              raw_ops: dict[str, Callable[[int], Any]] | None = None) -> Row:
        fn(ops * 10)  # warm the connection and leader cache
        wait_indexed(kv)
        if raw_ops:
            latency, raw_latencies = interleaved(fn, raw_ops, ops)
            beside.update(raw_latencies)
        else:
            latency = latencies(fn, ops)
        wait_indexed(kv)
        if name == "PUT":
            raw_bursts()
        ops_per_second = throughput(after(fn), ops * 2)
        indexed = (ops * 2) / (ops * 2 / ops_per_second + wait_indexed(kv)) if writes else None
        if name == "PUT":
            raw_bursts()
        return Row(name, size, latency, ops_per_second, indexed)

    rows = [
        phase("GET", get, False, {"rtt": raw.echo}),
        phase("PUT", put, True, {"commit": raw.commit_in_leader, "via": raw.commit}),
        phase("PUT overwrite", overwrite, True),
        phase("SEARCH", search, False),
    ]
    throughput(doomed, ops * 3)  # every delete below removes a key that exists
    rows.append(phase("DELETE", delete, True))
    (in_before, via_before), (in_after, via_after) = bracket
    baselines = Baselines(beside["rtt"], beside["commit"], (in_before + in_after) / 2, beside["via"],
                          (via_before + via_after) / 2)
    return rows, baselines


def run(sizes: Sequence[int] = DEFAULT_SIZES, *, ops: int = 500, directory: str | None = None,
        progress: Callable[[str], None] = print, **cluster_settings: Any) -> ClusterBenchReport:
    """Start a 2×3 cluster and the raw groups, measure the table and the baselines, stop them.

    ``cluster_settings`` go into the cluster file (for example ``index_backlog=0``).
    """
    from semcache.cluster._client import DistributedSemanticKV
    from semcache.embeddings import HashEmbedding

    rows: list[Row] = []
    progress(f"starting {SHARDS} raw groups (3 processes each) and a local cluster ({SHARDS} shards x 3 replicas)")
    with (
        raw_flight_groups(SHARDS) as raw_leaders,
        tempfile.TemporaryDirectory(prefix="semcache-cluster-bench-") as tmp,
    ):
        raw = RawGroups(raw_leaders)
        cluster = LocalCluster(directory or tmp)
        try:
            cluster.up(SHARDS, 3, embedding=f"hash:{DIM}", **cluster_settings)
            kv = DistributedSemanticKV(cluster.addresses(), embedding=HashEmbedding(DIM), max_workers=16,
                                       token=cluster.config().token)
            rng = np.random.default_rng(5)
            vectors = unit_vectors(rng, max(sizes), DIM)
            loaded = 0
            for size in sorted(sizes):
                progress(f"loading keys {loaded}..{size}")

                def load(i: int, start: int = loaded) -> Any:
                    return kv.put(f"key:{start + i:06d}", VALUE, vector=vectors[start + i])

                throughput(load, size - loaded)
                wait_indexed(kv)
                loaded = size
                progress(f"measuring at {size} keys, with the raw groups' baselines")
                size_rows, baselines = measure_size(kv, size, vectors, unit_vectors(rng, ops, DIM), ops, raw)
                rows += size_rows
            kv.close()
        finally:
            cluster.down()
    return ClusterBenchReport(
        rows, baselines.flight_rtt, baselines.raft_commit, baselines.raft_ops_per_second, environment(),
        baselines.raft_via_flight, baselines.raft_via_flight_ops_per_second,
    )


def environment() -> dict[str, str]:
    from importlib.metadata import version

    from semcache import __version__

    cpu = platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as handle:
        cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    return {
        "cpu": f"{cpu} ({os.cpu_count()} cores visible, shared with the {SHARDS * 3} node and {SHARDS * 3} raw-group "
               "processes)",
        "load average at the end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "semcache": __version__,
        "pyarrow": version("pyarrow"),
        "pysyncobj": version("pysyncobj"),
        "hnswlib": version("hnswlib"),
        "cluster": f"{SHARDS} shards x 3 replicas on 127.0.0.1, hash:384 stamp, precomputed vectors",
    }


def format_report(report: ClusterBenchReport) -> str:
    """The Markdown tables ``semcache bench --cluster`` prints."""
    ms = lambda s: f"{s * 1000:.2f}"  # noqa: E731 - a local formatter
    lines = [
        f"| operation | keys | p50 ms | p90 ms | p99 ms | 1 thread ops/s | {THREADS} threads ops/s "
        f"| {THREADS} threads ops/s until indexed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        indexed = "" if r.indexed_ops_per_second is None else f"{r.indexed_ops_per_second:,.0f}"
        lines.append(
            f"| {r.op} | {r.keys:,} | {ms(r.latency.median)} | {ms(r.latency.p90)} | {ms(r.latency.p99)} | "
            f"{1 / r.latency.median:,.0f} | {r.ops_per_second:,.0f} | {indexed} |"
        )
    lines += [
        "",
        f"| baseline (measured beside the {max(r.keys for r in report.rows):,}-key rows) | p50 ms | p99 ms | ops/s |",
        "|---|---|---|---|",
        f"| raw Flight round trip | {ms(report.flight_rtt.median)} | {ms(report.flight_rtt.p99)} | "
        f"{1 / report.flight_rtt.median:,.0f} |",
        f"| raw pysyncobj commit, {SHARDS} groups x 3 replicas (1 thread / {THREADS} threads) | "
        f"{ms(report.raft_commit.median)} | {ms(report.raft_commit.p99)} | "
        f"{1 / report.raft_commit.median:,.0f} / {report.raft_ops_per_second:,.0f} |",
    ]
    via = report.raft_via_flight
    if via is not None and report.raft_via_flight_ops_per_second:
        lines.append(
            f"| raw pysyncobj commit through one Flight call (1 thread / {THREADS} threads) | {ms(via.median)} | "
            f"{ms(via.p99)} | {1 / via.median:,.0f} / {report.raft_via_flight_ops_per_second:,.0f} |"
        )
    lines += [
        "",
        "| target | measured | ratio | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    largest = max(r.keys for r in report.rows)
    rtt, commit = report.flight_rtt.median, report.raft_commit.median
    get = report.row("GET", largest).latency.median
    put = report.row("PUT", largest).latency.median
    put_ops = report.row("PUT", largest).ops_per_second
    search_ops = report.row("SEARCH", largest).ops_per_second
    checks = [
        ("GET p50 vs raw Flight RTT", f"{ms(get)} ms vs {ms(rtt)} ms", get / rtt, f"<= {TARGETS['get']}x",
         get / rtt <= TARGETS["get"]),
        ("sync PUT p50 vs raw commit + RTT", f"{ms(put)} ms vs {ms(commit + rtt)} ms", put / (commit + rtt),
         f"<= {TARGETS['put']}x", put / (commit + rtt) <= TARGETS["put"]),
        (f"PUT throughput ({THREADS} threads) vs raw pysyncobj", f"{put_ops:,.0f} vs {report.raft_ops_per_second:,.0f}"
         " ops/s", put_ops / report.raft_ops_per_second, f">= {TARGETS['pipelined_put']}x",
         put_ops / report.raft_ops_per_second >= TARGETS["pipelined_put"]),
        (f"SEARCH at {largest:,} keys, {THREADS} threads", f"{search_ops:,.0f} ops/s",
         search_ops / TARGETS["search_ops"], f">= {TARGETS['search_ops']:.0f} ops/s (1.0x)",
         search_ops >= TARGETS["search_ops"]),
    ]
    for name, measured, ratio, goal, ok in checks:
        lines.append(f"| {name} | {measured} | {ratio:.2f}x | {goal} | {'met' if ok else 'MISSED'} |")
    if via is not None and report.raft_via_flight_ops_per_second:
        # The same two write targets against the raw groups reached as a node is reached: a commit
        # requested through a Flight call pays the hand-offs between gRPC's threads and the tick thread.
        via_ops = report.raft_via_flight_ops_per_second
        for name, measured, ratio, goal, ok in (
            ("(same transport) sync PUT p50 vs raw commit through Flight", f"{ms(put)} ms vs {ms(via.median)} ms",
             put / via.median, f"<= {TARGETS['put']}x", put / via.median <= TARGETS["put"]),
            (f"(same transport) PUT throughput ({THREADS} threads) vs raw through Flight",
             f"{put_ops:,.0f} vs {via_ops:,.0f} ops/s", put_ops / via_ops, f">= {TARGETS['pipelined_put']}x",
             put_ops / via_ops >= TARGETS["pipelined_put"]),
        ):
            lines.append(f"| {name} | {measured} | {ratio:.2f}x | {goal} | {'met' if ok else 'MISSED'} |")
    sustained = report.row("PUT", largest).indexed_ops_per_second or 0.0
    lines.append(
        f"| (for reference) PUT throughput until every replica indexed it, vs raw pysyncobj | {sustained:,.0f} vs "
        f"{report.raft_ops_per_second:,.0f} ops/s | {sustained / report.raft_ops_per_second:.2f}x | no target | |"
    )
    lines += ["", *(f"- {k}: {v}" for k, v in report.environment.items())]
    return "\n".join(lines)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_cluster_bench(args: argparse.Namespace) -> int:
    """``semcache bench --cluster``: run and print the tables (optional ``args.sizes``, ``ops``, ``quick``)."""
    quick = bool(getattr(args, "quick", False))  # a smoke run, not a measurement
    sizes = tuple(getattr(args, "sizes", None) or ((200, 1_000) if quick else DEFAULT_SIZES))
    ops = int(getattr(args, "ops", None) or (100 if quick else 500))
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the cluster and baseline processes are stopped on the way out.
        signal.signal(signal.SIGTERM, _exit_on_signal)
    settings = {} if getattr(args, "index_backlog", None) is None else {"index_backlog": args.index_backlog}
    report = run(sizes, ops=ops, progress=lambda m: print(f"... {m}", file=sys.stderr, flush=True), **settings)
    print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    sub = parser.add_subparsers(dest="what", required=True)
    bench = sub.add_parser("run", help="the whole benchmark")
    bench.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    bench.add_argument("--ops", type=int, default=500)
    bench.add_argument("--index-backlog", type=int, default=None,
                       help="deferred hnswlib inserts, all scopes (cluster file index_backlog; 0 inserts at once)")
    raw_node = sub.add_parser("raw-flight-node")
    raw_node.add_argument("--raft-port", type=int, required=True)
    raw_node.add_argument("--partners", required=True)
    raw_node.add_argument("--rpc-port", type=int, required=True)
    raw_node.add_argument("--secret", required=True)
    raw_node.add_argument("--journal", required=True)
    args = parser.parse_args(argv)
    if args.what == "raw-flight-node":
        raw_flight_node(args.raft_port, [int(p) for p in args.partners.split(",")], args.rpc_port, args.secret,
                        args.journal)
    else:
        return run_cluster_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
