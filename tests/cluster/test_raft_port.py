"""The Raft port of a real replica: oversized frames are refused before they are buffered, idle connections reaped.

Raw sockets against node processes: a frame header declaring 2^31-1 bytes
followed by a stream of garbage must close that connection at once (before,
the replica's tick thread grew a buffer to tens of MiB and its shard changed
leader), and connections that never identify themselves must be closed after
the connection timeout (before, never).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import ClusterHarness, wait_until

from semcache.cluster._raft.compat import MAX_UNIDENTIFIED_CONNECTIONS
from semcache.cluster._sizes import MAX_RAFT_FRAME_BYTES
from semcache.errors import ClusterError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MIB = 1024 * 1024


@pytest.fixture
def shard_1x3(tmp_path: Path) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path, shards=1, replicas=3) as cluster:
        yield cluster


def raft_address(cluster: ClusterHarness, replica_id: str) -> tuple[str, int]:
    host, _, port = cluster.local.config().replica(replica_id).raft.rpartition(":")
    return host, int(port)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def is_closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


class Writes:
    """A thread putting small values until stopped; counts the acknowledged ones."""

    def __init__(self, cluster: ClusterHarness) -> None:
        self.kv = cluster.client(embedding=None, connection_timeout=1.0)
        self.acked = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            with contextlib.suppress(ClusterError):
                self.kv.put(f"k{seq % 50}", f"value {seq}", text="k")
                self.acked += 1
            seq += 1

    def __enter__(self) -> Writes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_a_frame_declaring_two_gib_is_refused_before_it_is_buffered(shard_1x3: ClusterHarness) -> None:
    cluster = shard_1x3
    leader = cluster.leader_of("shard-0")
    pid = cluster.local.pid(leader)
    assert pid is not None
    with Writes(cluster) as writes:
        wait_until(lambda: writes.acked >= 20, what="writes before the attack")
        before = cluster.health(leader) or {}
        resident_before = resident_bytes(pid)
        garbage = os.urandom(64 * 1024)
        sent, closed = 0, False
        with socket.create_connection(raft_address(cluster, leader), timeout=5.0) as sock:
            deadline = time.monotonic() + 10.0
            try:
                sock.sendall(struct.pack("i", 2**31 - 1))
                while sent < 64 * MIB and time.monotonic() < deadline and not closed:
                    sock.sendall(garbage)
                    sent += len(garbage)
                    closed = is_closed(sock)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except TimeoutError:
                pass  # the replica stopped reading: not closed
            if not closed:  # give the replica a moment to read what the kernel buffered
                with contextlib.suppress(TimeoutError):
                    closed = wait_until(lambda: is_closed(sock), 5.0, what="the connection to close")
        grown = resident_bytes(pid) - resident_before
        acked_after_attack = writes.acked
        wait_until(lambda: writes.acked >= acked_after_attack + 20, what="writes after the attack")
        after = cluster.health(leader) or {}
    print(f"\n[raft port] 2^31-1 frame header: closed={closed} after {sent / MIB:.1f} MiB sent; "
          f"leader RSS grew {grown / MIB:.1f} MiB; term {before.get('term')} -> {after.get('term')}, "
          f"role changes {before.get('role_changes')} -> {after.get('role_changes')}")
    assert closed
    assert sent < 16 * MIB  # refused at the header, not after buffering (kernel buffers absorb a little)
    assert grown < 4 * MAX_RAFT_FRAME_BYTES + 16 * MIB
    assert (after.get("role"), after.get("term"), after.get("role_changes")) == (
        "leader", before.get("term"), before.get("role_changes"))


def test_idle_connections_that_never_identify_themselves_are_closed(shard_1x3: ClusterHarness) -> None:
    cluster = shard_1x3
    target = cluster.followers_of("shard-0")[0]
    config = cluster.local.config()
    bound = max(3.5, config.election_timeout_max * 1.5)  # the replica's connectionTimeout (raft_conf)
    opened_at = time.monotonic()
    sockets = [socket.create_connection(raft_address(cluster, target), timeout=10.0) for _ in range(200)]
    try:
        opened_for = time.monotonic() - opened_at
        open_now = {id(s) for s in sockets}

        def all_closed() -> bool:
            for sock in sockets:
                if id(sock) in open_now and is_closed(sock):
                    open_now.discard(id(sock))
            return not open_now

        wait_until(all_closed, bound + opened_for + 15.0, interval=0.2, what="the idle connections to be closed")
        closed_after = time.monotonic() - opened_at
    finally:
        for sock in sockets:
            sock.close()
    print(f"\n[raft port] 200 idle connections (at most {MAX_UNIDENTIFIED_CONNECTIONS} kept waiting) all closed "
          f"{closed_after:.1f}s after opening (bound {bound:.1f}s, opening took {opened_for:.1f}s)")
    kv = cluster.client(embedding=None, connection_timeout=1.0)
    kv.put("after-idle", "still serving", text="k")
    assert kv.get("after-idle") == b"still serving"
    assert (cluster.health(target) or {}).get("leader") is not None
