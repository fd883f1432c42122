"""Network partitions between the replicas of a local cluster: a TCP proxy in front of every Raft port.

In the style of kazoo's harness: ``partition(replica)`` cuts every Raft link of
a replica (it can still talk to clients, like a node cut off from its peers
but not from the application), ``cut(a, b)`` cuts one link, ``heal()`` restores
them all.  Network namespaces would need root and would reach into the host's
network configuration; a proxy needs neither.

How it works: :class:`RaftPartitions` rewrites the cluster file before the
nodes start.  Each replica keeps its ``raft`` address (its identity in the
shard, and where the others connect) and gains a ``raft_bind`` address, where
it really listens; a proxy listens on ``raft`` and forwards to ``raft_bind``.
pysyncobj opens one connection per pair of replicas, from the one with the
greater address to the other, so every link passes through exactly one proxy.
The proxy learns which replica dialled from the kernel: it finds the process
owning the connecting socket through ``/proc`` (Linux only).  A cut link's
connections are closed and new ones closed as soon as they are accepted, until
``heal()``.

Every thread and socket it starts is stopped by :meth:`RaftPartitions.stop`
(the context manager calls it, also when the test fails).

>>> # cluster = ClusterHarness(tmp_path, shards=1, replicas=3)
>>> # with RaftPartitions(cluster.local) as net, cluster:
>>> #     net.partition(cluster.leader_of("shard-0"))
>>> #     ...
>>> #     net.heal()
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from semcache.cluster._config import ShardConfig
from semcache.cluster._local import LocalCluster, free_ports

ACCEPT_POLL = 0.2  # seconds a proxy's accept waits before looking at its stop flag
CHUNK = 64 * 1024


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def socket_owner(local_port: int, remote_port: int, pids: dict[str, int]) -> str | None:
    """Which of ``pids`` (replica id -> pid) owns the TCP socket ``127.0.0.1:local_port -> :remote_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, node = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port \
                        and node != "0":
                    inode = node
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for replica_id, pid in pids.items():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return replica_id
    return None


class _Link:
    """One forwarded connection: the dialler's socket and the one to the real Raft port."""

    def __init__(self, dialler: str | None, target: str, outer: socket.socket, inner: socket.socket) -> None:
        self.dialler, self.target = dialler, target
        self.outer, self.inner = outer, inner

    def close(self) -> None:
        _close(self.outer)
        _close(self.inner)


class RaftPartitions:
    """Proxies in front of every replica's Raft port of ``local``, and the links they currently cut.

    Create it after the cluster file and before any node starts (it rewrites the file).
    """

    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        config = local.config()
        shards = []
        for shard, ports in zip(config.shards, (free_ports(len(s.replicas)) for s in config.shards), strict=True):
            replicas = tuple(replace(r, raft_bind=f"{_split(r.raft)[0]}:{port}")
                             for r, port in zip(shard.replicas, ports, strict=True))
            shards.append(ShardConfig(shard.id, replicas))
        replace(config, shards=tuple(shards)).dump(local.config_path)
        self.replicas = {r.id: r for r in local.config().replicas()}
        self._cut: set[frozenset[str]] = set()
        self._links: list[_Link] = []
        self.unidentified = 0  # connections whose dialler was not found among the node processes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    # --------------------------------------------------------------- faults
    def partition(self, replica_id: str) -> None:
        """Cut every Raft link between ``replica_id`` and the other replicas of its shard."""
        shard = self.local.config().shard_of(replica_id)
        for other in shard.replicas:
            if other.id != replica_id:
                self.cut(replica_id, other.id)

    def cut(self, a: str, b: str) -> None:
        """Cut the Raft link between replicas ``a`` and ``b`` (both directions)."""
        link = frozenset((a, b))
        with self._lock:
            self._cut.add(link)
            doomed = [x for x in self._links if frozenset((x.dialler or "?", x.target)) == link]
        for forwarded in doomed:
            forwarded.close()

    def heal(self) -> None:
        """Restore every link; the replicas reconnect on their own (pysyncobj retries every 0.5 s)."""
        with self._lock:
            self._cut.clear()

    def _refused(self, dialler: str | None, target: str) -> bool:
        """Whether a connection from ``dialler`` to ``target`` is cut (call with the lock held)."""
        if self._stopping.is_set():
            return True
        if dialler is None:  # not identified: refuse it if anything touching the target is cut
            return any(target in link for link in self._cut)
        return frozenset((dialler, target)) in self._cut

    # ------------------------------------------------------------- life
    def start(self) -> RaftPartitions:
        for replica in self.replicas.values():
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(_split(replica.raft))
            listener.listen(16)
            listener.settimeout(ACCEPT_POLL)
            self._listeners.append(listener)
            self._spawn(self._accept_loop, listener, replica.id)
        return self

    def stop(self) -> None:
        """Close every proxy and forwarded connection and join every thread (safe to call twice)."""
        self._stopping.set()
        for listener in self._listeners:
            _close(listener)
        with self._lock:
            links, self._links = self._links, []
            threads = list(self._threads)
        for forwarded in links:
            forwarded.close()
        for thread in threads:
            thread.join(timeout=5)
        alive = [t for t in threads if t.is_alive()]
        assert not alive, f"partition proxy threads still running: {alive}"

    def __enter__(self) -> RaftPartitions:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------- forwarding
    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self, listener: socket.socket, target: str) -> None:
        while not self._stopping.is_set():
            try:
                outer, (_, port) = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._forward(outer, port, target)

    def _forward(self, outer: socket.socket, dialler_port: int, target: str) -> None:
        pids = {rid: pid for rid in self.replicas if (pid := self.local.pid(rid)) is not None}
        dialler = socket_owner(dialler_port, _split(self.replicas[target].raft)[1], pids)
        bind = self.replicas[target].raft_bind
        with self._lock:
            self.unidentified += dialler is None
            refused = self._refused(dialler, target)
        if refused or bind is None:
            _close(outer)
            return
        try:
            inner = socket.create_connection(_split(bind), timeout=2.0)
        except OSError:
            _close(outer)
            return
        outer.settimeout(None)
        inner.settimeout(None)
        forwarded = _Link(dialler, target, outer, inner)
        with self._lock:
            refused = self._refused(dialler, target)  # cut (or stopped) while it was connecting
            if not refused:
                self._links.append(forwarded)
        if refused:
            forwarded.close()
            return
        self._spawn(self._pump, forwarded, outer, inner)
        self._spawn(self._pump, forwarded, inner, outer)

    def _pump(self, forwarded: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        forwarded.close()
        with self._lock, contextlib.suppress(ValueError):
            self._links.remove(forwarded)
