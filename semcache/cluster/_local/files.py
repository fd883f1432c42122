"""A local cluster's directory: the cluster file (with its generated secret), pid, command and log files.

The directory looks like this::

    D/cluster.toml          the cluster file every node reads (secret generated)
    D/data/<replica>/       each replica's Raft journal and snapshots
    D/run/<replica>.pid     the pid of the node process serving it
    D/run/<replica>.cmd     its command line (start it again with exactly this)
    D/logs/<replica>.log    its output

>>> config = make_config(1, 3, embedding="hash:64", secret="s3cret")
>>> [r.id for r in config.replicas()], config.secret, config.replicas()[0].rpc.startswith("grpc://127.0.0.1:")
(['shard-0-r0', 'shard-0-r1', 'shard-0-r2'], 's3cret', True)
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from semcache._engine.inputs import whole_number
from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.errors import ConfigurationError

CLUSTER_FILE = "cluster.toml"
DEFAULT_SHARDS = 2
DEFAULT_REPLICAS = 3  # a majority of 3 is 2: a shard keeps serving with one replica down


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (bound, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_config(
    shards: int,
    replicas: int,
    *,
    host: str = "127.0.0.1",
    secret: str | None = None,
    token: str | None = None,
    admin_token: str | None = None,
    **settings: Any,
) -> ClusterConfig:
    """A cluster of ``shards`` × ``replicas`` on free local ports, data under ``data/``.

    Args:
        secret: the Raft secret; a fresh random one when omitted.
        token, admin_token: the data-plane and admin RPC tokens; fresh random ones when omitted, none
            when ``""`` (an open RPC port: a dev setup, which nodes warn about).
        settings: any other :class:`~semcache.cluster._config.ClusterConfig` field (embedding...).

    Raises:
        ConfigurationError: fewer than one shard or replica, or bad settings.
    """
    for name, value in (("shards", shards), ("replicas", replicas)):
        whole_number(value, name, minimum=1, error=ConfigurationError)
    ports = iter(free_ports(2 * shards * replicas, host))
    shard_configs = tuple(
        ShardConfig(
            f"shard-{s}",
            tuple(
                Replica(f"shard-{s}-r{r}", f"{host}:{next(ports)}", f"grpc://{host}:{next(ports)}")
                for r in range(replicas)
            ),
        )
        for s in range(shards)
    )
    settings.setdefault("data_dir", "data")
    return ClusterConfig(
        secret=secret or secrets.token_urlsafe(24), shards=shard_configs,
        token=secrets.token_urlsafe(24) if token is None else token,
        admin_token=secrets.token_urlsafe(24) if admin_token is None else admin_token,
        **settings,
    )


class ClusterDirectory:
    """The files of a local cluster in one directory (see the module docstring for the layout).

    Args:
        directory: where they live (created by :meth:`create`).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory).resolve()

    @property
    def config_path(self) -> Path:
        return self.path / CLUSTER_FILE

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def run(self) -> Path:
        return self.path / "run"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> ClusterConfig:
        """The cluster file as it is now.

        Raises:
            ConfigurationError: there is no cluster in this directory, or the file is invalid.
        """
        if not self.exists():
            raise ConfigurationError(f"no cluster in {self.path} (start one: semcache cluster up --dir DIR)")
        return ClusterConfig.load(self.config_path)

    def create(self, shards: int, replicas: int, **settings: Any) -> ClusterConfig:
        """Write a new cluster file with a fresh secret, and the ``run``/``logs`` directories (refuses to overwrite).

        Raises:
            ConfigurationError: a cluster file already exists here, or bad settings.
        """
        if self.exists():
            raise ConfigurationError(f"{self.config_path} already exists; use it, or remove the directory first")
        config = make_config(shards, replicas, **settings)
        self.make_dirs()
        config.dump(self.config_path)
        return ClusterConfig.load(self.config_path)

    def save(self, config: ClusterConfig) -> None:
        """Write ``config`` over the cluster file (membership changes)."""
        config.dump(self.config_path)

    def make_dirs(self) -> None:
        for sub in (self.run, self.logs):
            sub.mkdir(parents=True, exist_ok=True)

    def pid_file(self, replica_id: str) -> Path:
        return self.run / f"{replica_id}.pid"

    def command_file(self, replica_id: str) -> Path:
        return self.run / f"{replica_id}.cmd"

    def log_file(self, replica_id: str) -> Path:
        return self.logs / f"{replica_id}.log"

    def replicas_with_pid_files(self) -> list[str]:
        """Replica ids that have a pid file (started from here, maybe running), sorted."""
        return sorted(p.stem for p in self.run.glob("*.pid")) if self.run.is_dir() else []

    def log_tail(self, replica_id: str, lines: int = 3) -> list[str]:
        """The last ``lines`` non-empty lines of the replica's log (an exited node's reason, usually; a message
        may span lines), or [] when it has none."""
        try:
            with open(self.log_file(replica_id), "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 8192))
                tail = log.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [line.strip() for line in tail.splitlines() if line.strip()][-lines:]
