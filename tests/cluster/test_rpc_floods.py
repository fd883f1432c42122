"""Floods on a real node's RPC port: huge bodies, thousands of unauthenticated calls, a huge header.

Each flood runs in its own process (``tests.cluster.rpc_flood``) against the
leader of a 3-replica shard while a writer thread keeps putting.  The
outcomes checked: no replica changed term or role (no election), the writer's
puts were acknowledged while the flood ran, and the leader's peak memory stayed
bounded.  None of it depends on timing: a flood either deposes the leader or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache.cluster._client import DistributedSemanticKV
from semcache.errors import ClusterError
from tests.support.harness import ClusterHarness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MIB = 1 << 20
MEMORY_BOUND = 200 * MIB  # the leader's peak RSS may grow by this much during a flood
THREAD_BOUND = 100  # threads in the leader's process, whatever the flood (16 RPC workers + Raft, gRPC, applier...)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path_factory.mktemp("floods"), shards=1, replicas=3, token="flood-test-token") as harness:
        yield harness


class Writer:
    """A thread that puts as fast as acknowledgements come back; counts them."""

    def __init__(self, kv: DistributedSemanticKV) -> None:
        self.kv = kv
        self.acknowledged = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self.kv.put(f"w{i}", f"value {i}")
                self.acknowledged += 1
            except ClusterError as exc:
                self.errors.append(repr(exc))
            i += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def elections(cluster: ClusterHarness) -> dict[str, tuple[int, int]]:
    """``{replica: (term, role changes)}`` of every replica of shard-0."""
    out = {}
    for replica_id in cluster.replicas("shard-0"):
        health = cluster.health(replica_id)
        assert health is not None, f"{replica_id} did not answer"
        out[replica_id] = (health["term"], health["role_changes"])
    return out


def proc_status(pid: int, field: str) -> int:
    """A number from ``/proc/PID/status`` (``VmHWM``: peak resident memory in KiB, ``Threads``...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_rss(pid: int) -> int:
    return proc_status(pid, "VmHWM") * 1024


class ThreadWatch:
    """Samples a process's thread count in the background; the most seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.most = max(self.most, proc_status(self.pid, "Threads"))

    def __enter__(self) -> ThreadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def flood(address: str, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "tests.cluster.rpc_flood", address, *args], capture_output=True,
                            text=True, timeout=300, env={**os.environ}, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


FLOODS = {
    # 4 concurrent 64 MiB bodies without a token (the probe sent 1 GiB; the limit is 1 MiB)
    "big bodies": ("big", "--mib", "64", "--calls", "4"),
    # 2,000 concurrent unauthenticated calls, each sent again as soon as it ends, for 15 s
    "2000 unauthenticated calls": ("many", "--calls", "2000", "--seconds", "15"),
    # a 50 MB wire header, with and without the token
    "50 MB header": ("header", "--mib", "50", "--calls", "2"),
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_a_flood_on_the_leaders_rpc_port_changes_no_leader_and_writes_keep_flowing(
    cluster: ClusterHarness, name: str
) -> None:
    leader = cluster.leader_of("shard-0")
    pid = cluster.local.pid(leader)
    assert pid is not None
    kv = cluster.client()
    kv.put("warm", "up")
    before, memory_before = elections(cluster), peak_rss(pid)
    args = FLOODS[name]
    if name == "50 MB header":
        args = (*args, "--token", cluster.config.token)
    with Writer(kv) as writer, ThreadWatch(pid) as threads:
        acknowledged_before = writer.acknowledged
        outcomes = flood(cluster.rpc(leader), *args)
        acknowledged_during = writer.acknowledged - acknowledged_before
    print(name, outcomes, "writes acknowledged during the flood:", acknowledged_during, "threads:", threads.most)
    assert "OK" not in outcomes, outcomes  # nothing got through
    assert elections(cluster) == before, f"an election during the flood ({outcomes})"
    assert acknowledged_during > 0, f"no write was acknowledged during the flood: {writer.errors[-3:]}"
    assert peak_rss(pid) - memory_before < MEMORY_BOUND, f"peak RSS grew by {(peak_rss(pid) - memory_before) >> 20} MiB"
    assert threads.most < THREAD_BOUND, f"the leader ran {threads.most} threads"
    assert kv.get("warm") == b"up"
