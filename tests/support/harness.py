"""Real local clusters for tests: node processes on 127.0.0.1, fault injection, guaranteed cleanup.

Built on :class:`semcache.cluster._local.LocalCluster` (the code behind ``semcache
cluster up``), with the fault helpers a test needs, after kazoo's harness:
``kill9`` / ``pause`` / ``resume`` / ``restart`` a replica, find a shard's
``leader_of``, wait until replicas ``converge`` (same applied index and state
digest).  Every wait is bounded; :meth:`ClusterHarness.stop_all` (called by
the context manager and the fixtures, also when a test fails) resumes paused
nodes and stops every process the harness started.

>>> # with ClusterHarness(tmp_path, shards=2, replicas=3) as cluster:
>>> #     kv = cluster.client()
>>> #     cluster.kill9(cluster.leader_of("shard-0"))
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from semcache.cluster._client import DistributedSemanticKV
from semcache.cluster._flight import NodeClient
from semcache.cluster._local import LocalCluster
from semcache.errors import ClusterError, NoQuorumError, NotLeaderError, ShardUnavailableError
from support.wait import WAIT, wait_until

T = TypeVar("T")

DIM = 64
EMBEDDING = f"hash:{DIM}"


class ClusterHarness:
    """A local cluster of real node processes for one test (or one test module).

    Args:
        directory: a fresh directory (pytest's ``tmp_path``).
        shards, replicas: the shape.
        settings: cluster-file settings (token, compaction_entries, ...); the
            embedding defaults to ``hash:64``.
    """

    def __init__(self, directory: Path, shards: int = 2, replicas: int = 3, **settings: Any) -> None:
        settings.setdefault("embedding", EMBEDDING)
        self.local = LocalCluster(directory)
        self.config = self.local.create(shards, replicas, **settings)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.clients: list[DistributedSemanticKV] = []

    # -------------------------------------------------------------- life
    def start(self, timeout: float = WAIT) -> ClusterHarness:
        """Start every replica not running and wait until every shard has a leader."""
        for replica in self.local.config().replicas():
            if self.local.pid(replica.id) is None:
                self.processes[replica.id] = self.local.start(replica.id)
        self.local.wait_for_leaders(timeout)
        return self

    def stop_all(self) -> None:
        """Stop every node and close every client; safe to call twice and after failures."""
        for kv in self.clients:
            with contextlib.suppress(Exception):
                kv.close()
        self.clients.clear()
        self.paused.clear()
        self.local.stop_all(timeout=5.0)  # SIGCONTs paused nodes first
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                process.kill()
                process.wait(timeout=5)

    def __enter__(self) -> ClusterHarness:
        try:
            return self.start()
        except BaseException:
            self.stop_all()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ----------------------------------------------------------- clients
    @property
    def addresses(self) -> list[str]:
        return self.local.addresses()

    def client(self, **kwargs: Any) -> DistributedSemanticKV:
        """A DistributedSemanticKV on this cluster (closed by :meth:`stop_all`), holding the admin token too
        (tests clear between cases) unless ``admin_token`` is given."""
        kwargs.setdefault("token", self.config.token or None)
        kwargs.setdefault("admin_token", self.config.admin_token or None)
        kv = DistributedSemanticKV(self.addresses, **kwargs)
        self.clients.append(kv)
        return kv

    def node(self, replica_id: str, timeout: float = 2.0) -> NodeClient:
        """A raw NodeClient to one replica with the operator's (admin) token (the caller closes it)."""
        token = self.config.admin_token or self.config.token or None
        return NodeClient(self.rpc(replica_id), token=token, timeout=timeout)

    def rpc(self, replica_id: str) -> str:
        return self.local.config().replica(replica_id).rpc

    def replicas(self, shard_id: str) -> list[str]:
        return [r.id for shard in self.local.config().shards if shard.id == shard_id for r in shard.replicas]

    def health(self, replica_id: str) -> dict[str, Any] | None:
        try:
            with self.node(replica_id, timeout=1.0) as node:
                return node.health()
        except ClusterError:
            return None

    def leader_of(self, shard_id: str, timeout: float = WAIT, *, other_than: str | None = None) -> str:
        """The replica id that leads ``shard_id`` (waiting, up to ``timeout``, for one with a quorum)."""

        def find() -> str | None:
            for replica_id in self.replicas(shard_id):
                if replica_id in self.paused or replica_id == other_than:
                    continue
                h = self.health(replica_id)
                if h and h.get("role") == "leader" and h.get("has_quorum"):
                    return replica_id
            return None

        return wait_until(find, timeout, interval=0.1, what=f"a leader of {shard_id}")

    def followers_of(self, shard_id: str) -> list[str]:
        leader = self.leader_of(shard_id)
        return [r for r in self.replicas(shard_id) if r != leader]

    # ------------------------------------------------------------ faults
    def kill9(self, replica_id: str) -> None:
        """SIGKILL the node of ``replica_id`` and reap it."""
        self.local.signal(replica_id, signal.SIGKILL)
        self._reap(replica_id)
        self.paused.discard(replica_id)

    def terminate(self, replica_id: str) -> None:
        """Stop the node cleanly (SIGTERM)."""
        self.local.stop(replica_id, timeout=10.0)
        self._reap(replica_id)

    def pause(self, replica_id: str) -> None:
        """SIGSTOP: the process stays, silent (a GC pause, a hung VM)."""
        self.local.signal(replica_id, signal.SIGSTOP)
        self.paused.add(replica_id)

    def resume(self, replica_id: str) -> None:
        self.local.signal(replica_id, signal.SIGCONT)
        self.paused.discard(replica_id)

    def restart(self, replica_id: str) -> None:
        """Start ``replica_id`` again with the same command line (after a kill or stop)."""
        if self.local.pid(replica_id) is not None:
            self.terminate(replica_id)
        self.processes[replica_id] = self.local.start(replica_id)

    def _reap(self, replica_id: str) -> None:
        process = self.processes.get(replica_id)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    # ------------------------------------------------------- convergence
    def digests(self, shard_id: str) -> dict[str, tuple[int, str] | None]:
        """``{replica: (applied commands, state digest)}``; None for a replica that did not answer."""
        out: dict[str, tuple[int, str] | None] = {}
        for replica_id in self.replicas(shard_id):
            try:
                with self.node(replica_id, timeout=2.0) as node:
                    d = node.digest()
                out[replica_id] = (int(d["applied"]), str(d["digest"]))
            except ClusterError:
                out[replica_id] = None
        return out

    def converge(self, shard_id: str, timeout: float = WAIT) -> str:
        """Wait until every replica of ``shard_id`` answers with the same digest; that digest."""

        def same() -> str | None:
            digests = list(self.digests(shard_id).values())
            states = {d[1] for d in digests if d is not None}
            return states.pop() if None not in digests and len(states) == 1 else None

        return wait_until(same, timeout, interval=0.25, what=f"replicas of {shard_id} to converge")


# ------------------------------------------------------------------ history
@dataclass(frozen=True)
class Op:
    """One client operation on one key, as a history records it.

    ``outcome`` is ``"ok"`` (acknowledged), ``"fail"`` (a definite refusal that
    changed nothing) or ``"unknown"`` (timed out, no quorum, connection lost:
    it may have happened, at any time after ``start``).  For a read, ``value``
    is what it returned; for a write, what it wrote.
    """

    kind: str  # "write" or "read"
    key: str
    value: bytes | None
    start: float
    end: float
    outcome: str


class History:
    """A thread-safe log of operations, timed with one monotonic clock."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()

    def write(self, kv: Any, key: str, value: bytes) -> str:
        """Put through ``kv`` and record it; the outcome."""
        start = time.monotonic()
        try:
            kv.put(key, value)
            outcome = "ok"
        except (NoQuorumError, ShardUnavailableError, NotLeaderError):
            outcome = "unknown"  # may have committed, or may still
        self._add(Op("write", key, value, start, time.monotonic(), outcome))
        return outcome

    def read(self, kv: Any, key: str) -> bytes | None:
        """Get through ``kv`` and record it (a failed read records nothing: it observed nothing)."""
        start = time.monotonic()
        try:
            value = kv.get(key)
        except ClusterError:
            return None
        self._add(Op("read", key, value, start, time.monotonic(), "ok"))
        return value

    def _add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def acknowledged(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            if op.kind == "write" and op.outcome == "ok":
                out.setdefault(op.key, []).append(op)
        return out


def check_history(ops: list[Op]) -> list[str]:
    """Anomalies in a history of puts and gets of single keys (empty: none found).

    Per key, a read of value ``x`` at ``[s, e]`` is explained by a write ``w`` of
    ``x`` (acknowledged, or unknown = may have happened) that started before
    ``e``, unless an acknowledged write ``w2`` started after ``w`` was
    acknowledged and itself was acknowledged before ``s``: then ``x`` was
    already overwritten when the read began (a lost write, or a stale read).
    A read of None is explained only if no acknowledged write finished before
    ``s``.  Unknown writes never finish, so they never overwrite for sure.
    Writers must write distinct values (a value identifies its write).

    Reports: values never written, values older than an acknowledged
    overwrite (acknowledged data lost or rolled back), and missing keys.
    """
    problems: list[str] = []
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key, key_ops in by_key.items():
        writes = [op for op in key_ops if op.kind == "write" and op.outcome != "fail"]
        acked = [op for op in writes if op.outcome == "ok"]
        for read in (op for op in key_ops if op.kind == "read"):
            if read.value is None:
                done = [w for w in acked if w.end < read.start]
                if done:
                    problems.append(f"{key}: read None at {read.start:.3f} after {done[-1].value!r} was acknowledged")
                continue
            sources = [w for w in writes if w.value == read.value and w.start < read.end]
            if not sources:
                problems.append(f"{key}: read {read.value!r}, which no write (before the read ended) wrote")
                continue
            source = sources[0]
            if source.outcome != "ok":
                continue  # an unknown write may take effect at any time after it started
            newer = [w for w in acked if w.start > source.end and w.end < read.start]
            if newer:
                problems.append(
                    f"{key}: read {read.value!r} at {read.start:.3f}, but {newer[-1].value!r} had overwritten it "
                    f"(acknowledged at {newer[-1].end:.3f})"
                )
    return problems
