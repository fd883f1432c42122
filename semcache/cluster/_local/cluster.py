"""``LocalCluster``: one directory holding a cluster file, node processes, their pids and logs.

:class:`LocalCluster` is what ``semcache cluster up/status/down/add-replica/
remove-replica`` run, and what the fault tests build on.  It puts together the
directory's files (:mod:`~semcache.cluster._local.files`), the node processes
(:mod:`~semcache.cluster._local.supervisor`), what the nodes report and the
waits on it (:mod:`~semcache.cluster._local.watch`, formatted by
:mod:`~semcache.cluster._local.status`).  A node killed in any way and started
again with the same command line rejoins its shard with its data.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     cluster = LocalCluster(tmp)
...     config = cluster.create(shards=2, replicas=3, embedding="hash:64")
...     [s.id for s in config.shards], len(config.replicas())
(['shard-0', 'shard-1'], 6)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.cluster._local.files import DEFAULT_REPLICAS, DEFAULT_SHARDS, ClusterDirectory, free_ports
from semcache.cluster._local.recovery import Recovery, recover_shard
from semcache.cluster._local.status import ShardStatus
from semcache.cluster._local.supervisor import DEFAULT_STOP_TIMEOUT, NodeSupervisor
from semcache.cluster._local.watch import ClusterWatch
from semcache.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from semcache.cluster._flight import NodeClient

DEFAULT_UP_TIMEOUT = 60.0


class LocalCluster:
    """Create, start, inspect and stop a cluster of node processes in one directory.

    Args:
        directory: where the cluster file, data, pids and logs live.
        python: the interpreter that runs the nodes (default: this one).
        env: extra environment for the node processes.
    """

    def __init__(self, directory: str | os.PathLike[str], *, python: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.files = ClusterDirectory(directory)
        self.nodes = NodeSupervisor(self.files, python=python or sys.executable, env=dict(env or {}))
        self.watch = ClusterWatch(self.files, self.nodes)

    # ----------------------------------------------------------- the file
    @property
    def directory(self) -> Path:
        return self.files.path

    @property
    def config_path(self) -> Path:
        return self.files.config_path

    def exists(self) -> bool:
        return self.files.exists()

    def config(self) -> ClusterConfig:
        """The cluster file as it is now.

        Raises:
            ConfigurationError: there is no cluster in this directory, or the file is invalid.
        """
        return self.files.config()

    def create(self, shards: int = DEFAULT_SHARDS, replicas: int = DEFAULT_REPLICAS, **settings: Any) -> ClusterConfig:
        """Write a new cluster file (refuses to overwrite one).

        Raises:
            ConfigurationError: a cluster file already exists here, or bad settings.
        """
        return self.files.create(shards, replicas, **settings)

    def addresses(self) -> list[str]:
        """Every replica's client address, ``grpc://127.0.0.1:PORT``."""
        return [replica.rpc for replica in self.config().replicas()]

    def client_line(self) -> str:
        """The Python line that connects a client to this cluster."""
        config = self.config()
        token = f", token={config.token!r}" if config.token else ""
        return f"DistributedSemanticKV(nodes={self.addresses()!r}{token})"

    # ---------------------------------------------------------- processes
    def command(self, replica_id: str) -> list[str]:
        """The command line that runs ``replica_id`` (the same every time it starts)."""
        return self.nodes.command(replica_id)

    def pid(self, replica_id: str) -> int | None:
        """The pid of the running node serving ``replica_id``, or None if none runs."""
        return self.nodes.pid(replica_id)

    def start(self, replica_id: str, *, extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Start the node of ``replica_id`` in the background (see :meth:`NodeSupervisor.start`)."""
        return self.nodes.start(replica_id, extra_args=extra_args)

    def start_all(self) -> list[str]:
        """Start every replica not already running; the ids started."""
        return self.nodes.start_all()

    def signal(self, replica_id: str, signum: int) -> int:
        """Send ``signum`` to the node of ``replica_id``; its pid (ClusterError if it is not running)."""
        return self.nodes.signal(replica_id, signum)

    def stop(self, replica_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT, kill: bool = False) -> bool:
        """Stop the node of ``replica_id``; True if it was running (see :meth:`NodeSupervisor.stop`)."""
        return self.nodes.stop(replica_id, timeout=timeout, kill=kill)

    def stop_all(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every node this directory started; the ids that were running."""
        return self.nodes.stop_all(timeout=timeout)

    # ------------------------------------------------------------- health
    def connect(self, address: str, timeout: float = 2.0) -> NodeClient:
        """A NodeClient for ``address`` with this cluster's admin token (the operator's credential: it admits
        every call), or its data token when the file has no admin token; the caller closes it."""
        return self.watch.connect(address, timeout)

    def health(self, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
        """``{replica id: health dict}`` of every replica; ``{"error": ...}`` for those that did not answer."""
        return self.watch.health(timeout)

    def leaders(self, timeout: float = 2.0) -> dict[str, str | None]:
        """``{shard id: leader rpc address or None}``, as the replicas report it."""
        return self.watch.leaders(timeout)

    def wait_for_leaders(self, timeout: float = DEFAULT_UP_TIMEOUT,
                         on_wait: Callable[[dict[str, str | None]], None] | None = None, *,
                         watch: Sequence[str] = ()) -> dict[str, str]:
        """Block until every shard has a leader; ``{shard: leader rpc}``.

        Args:
            watch: replicas whose node was just started: if one exits while a shard
                still has no leader, give up at once (a node that cannot start
                would make the wait last the whole ``timeout``).

        Raises:
            ClusterError: a watched node exited (its last log line is quoted), or
                some shard had no leader after ``timeout`` seconds (the logs say why).
        """
        return self.watch.wait_for_leaders(timeout, on_wait, watch=watch)

    def status(self, timeout: float = 2.0) -> list[ShardStatus]:
        """Per shard: leader, term, commit index, entries, and each replica's lag behind the leader."""
        return self.watch.status(timeout)

    def wait_caught_up(self, replica_id: str, timeout: float = DEFAULT_UP_TIMEOUT) -> int:
        """Block until ``replica_id`` has applied everything its leader had committed when asked; the lag seen.

        Raises:
            ClusterError: it did not catch up within ``timeout``.
        """
        return self.watch.wait_caught_up(replica_id, timeout)

    # -------------------------------------------------------- membership
    def add_replica(self, shard_id: str, *, timeout: float = DEFAULT_UP_TIMEOUT) -> Replica:
        """Add a replica to ``shard_id`` while it serves: new ports, start it, join it, wait until it caught up.

        Raises:
            ConfigurationError: no such shard.
            ClusterError: the shard has no leader, or the new replica did not start or catch up.
        """
        config = self.config()
        shard = self.shard(shard_id)
        taken = {r.id for r in config.replicas()}
        number = next(n for n in range(len(taken) + 1) if f"{shard_id}-r{n}" not in taken)
        raft_port, rpc_port = free_ports(2)
        host = shard.replicas[0].raft.rpartition(":")[0]
        new = Replica(f"{shard_id}-r{number}", f"{host}:{raft_port}", f"grpc://{host}:{rpc_port}")
        self.join(shard_id, new, timeout=timeout)
        return new

    def join(self, shard_id: str, new: Replica, *, timeout: float = DEFAULT_UP_TIMEOUT) -> None:
        """Start ``new``'s node, add it through the shard's leader once it listens, wait until it caught up.

        The node runs before it is added: the leader refuses to add a replica whose node is not
        listening (a dead address must never become a voter).  If the add fails, the node is stopped and
        the cluster file left as it was.

        Raises:
            ClusterError: the shard has no leader, or the new replica did not start, join or catch up.
        """
        config = self.config()
        shard = self.shard(shard_id)
        leader = self.wait_for_leaders(timeout)[shard_id]
        self.files.save(config.with_shard(replace(shard, replicas=(*shard.replicas, new))))
        try:
            self.start(new.id)
            self.watch.wait_answering(new, timeout)
            with self.connect(leader, timeout=max(5.0, config.commit_timeout + 1)) as node:
                node.add_replica(new.id, new.raft, new.rpc)
        except BaseException:
            self.stop(new.id)
            self.files.save(config)
            raise
        self.wait_caught_up(new.id, timeout)

    def shard(self, shard_id: str) -> ShardConfig:
        """The shard ``shard_id`` as the cluster file has it (ConfigurationError if there is none)."""
        shard = next((s for s in self.config().shards if s.id == shard_id), None)
        if shard is None:
            raise ConfigurationError(f"no shard {shard_id!r} in {self.config_path}")
        return shard

    def recover(self, shard_id: str, *, survivors: Sequence[str] | None = None, seed: str | None = None,
                timeout: float = DEFAULT_UP_TIMEOUT) -> Recovery:
        """Bring back a shard that lost its quorum for good (see :mod:`~semcache.cluster._local.recovery`)."""
        return recover_shard(self, shard_id, survivors=survivors, seed=seed, timeout=timeout)

    def remove_replica(self, replica_id: str, *, timeout: float = DEFAULT_UP_TIMEOUT) -> None:
        """Remove ``replica_id`` from its shard while it serves, stop its node and drop it from the file.

        Raises:
            InvalidInputError: it leads its shard (stop it first so another leads), or is the last one.
            ClusterError: the shard has no leader.
        """
        config = self.config()
        shard = config.shard_of(replica_id)
        if len(shard.replicas) == 1:
            raise InvalidInputError(f"{replica_id} is the last replica of {shard.id}")
        leader = self.wait_for_leaders(timeout)[shard.id]
        if leader == config.replica(replica_id).rpc:
            raise InvalidInputError(
                f"{replica_id} leads {shard.id}; a leader cannot remove itself: "
                "stop it (semcache cluster will elect another), start it again, then remove it"
            )
        with self.connect(leader, timeout=max(5.0, config.commit_timeout + 1)) as node:
            node.remove_replica(replica_id)
        self.stop(replica_id)
        self.files.save(config.with_shard(replace(shard, replicas=tuple(r for r in shard.replicas
                                                                         if r.id != replica_id))))

    # ------------------------------------------------------------ up/down
    def up(self, shards: int = DEFAULT_SHARDS, replicas: int = DEFAULT_REPLICAS, *, timeout: float = DEFAULT_UP_TIMEOUT,
           **settings: Any) -> dict[str, str]:
        """Create the cluster (unless this directory has one), start every node, wait for leaders.

        Returns:
            ``{shard: leader rpc}``.
        """
        if not self.exists():
            self.create(shards, replicas, **settings)
        started = self.start_all()
        return self.wait_for_leaders(timeout, watch=started)

    def down(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every node and wait until the processes are gone; the ids that were running.  The data stays
        (``up`` again brings it back)."""
        return self.stop_all(timeout=timeout)
