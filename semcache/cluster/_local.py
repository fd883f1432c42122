"""A local cluster: one directory holding a cluster file, node processes, their pids and logs.

:class:`LocalCluster` is what ``semcache cluster up/status/down/add-replica/
remove-replica`` run, and what the fault tests build on.  The directory looks
like this::

    D/cluster.toml          the cluster file every node reads (secret generated)
    D/data/<replica>/       each replica's Raft journal and snapshots
    D/run/<replica>.pid     the pid of the node process serving it
    D/run/<replica>.cmd     its command line (start it again with exactly this)
    D/logs/<replica>.log    its output

Every node is an ordinary background process started as
``python -m semcache node --config D/cluster.toml --replica ID``
(the same as ``semcache node --config ... --replica ...``), in its own session
so it outlives the command that started it.  A node killed in any way and
started again with the same command line rejoins its shard with its data.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     cluster = LocalCluster(tmp)
...     config = cluster.create(shards=2, replicas=3, embedding="hash:64")
...     [s.id for s in config.shards], len(config.replicas())
(['shard-0', 'shard-1'], 6)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from semcache._engine.inputs import whole_number
from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.errors import ClusterError, ConfigurationError, InvalidInputError

CLUSTER_FILE = "cluster.toml"
DEFAULT_UP_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
POLL = 0.1


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
    **settings: Any,
) -> ClusterConfig:
    """A cluster of ``shards`` × ``replicas`` on free local ports, data under ``data/``.

    Args:
        secret: the Raft secret; a fresh random one when omitted.
        settings: any other :class:`~semcache.cluster._config.ClusterConfig` field (token, embedding...).

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
    return ClusterConfig(secret=secret or secrets.token_urlsafe(24), shards=shard_configs, **settings)


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as ``cluster status`` shows it (``error`` set when it did not answer)."""

    id: str
    rpc: str
    pid: int | None
    role: str | None = None
    term: int | None = None
    commit_index: int | None = None
    applied: int | None = None
    entries: int | None = None
    lag: int | None = None
    error: str | None = None
    index_queue: int | None = None  # HNSW inserts deferred to idle moments (the vectors are already searchable)


@dataclass(frozen=True)
class ShardStatus:
    """A shard's leader and its replicas' progress."""

    id: str
    leader: str | None
    term: int | None
    commit_index: int | None
    entries: int | None
    replicas: tuple[ReplicaStatus, ...]


class LocalCluster:
    """Create, start, inspect and stop a cluster of node processes in one directory.

    Args:
        directory: where the cluster file, data, pids and logs live.
        python: the interpreter that runs the nodes (default: this one).
        env: extra environment for the node processes.
    """

    def __init__(self, directory: str | os.PathLike[str], *, python: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.python = python or sys.executable
        self.extra_env = dict(env or {})

    # ----------------------------------------------------------- the file
    @property
    def config_path(self) -> Path:
        return self.directory / CLUSTER_FILE

    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> ClusterConfig:
        """The cluster file as it is now.

        Raises:
            ConfigurationError: there is no cluster in this directory, or the file is invalid.
        """
        if not self.exists():
            raise ConfigurationError(f"no cluster in {self.directory} (start one: semcache cluster up --dir DIR)")
        return ClusterConfig.load(self.config_path)

    def create(self, shards: int = 2, replicas: int = 3, **settings: Any) -> ClusterConfig:
        """Write a new cluster file (refuses to overwrite one).

        Raises:
            ConfigurationError: a cluster file already exists here, or bad settings.
        """
        if self.exists():
            raise ConfigurationError(f"{self.config_path} already exists; use it, or remove the directory first")
        config = make_config(shards, replicas, **settings)
        for sub in ("run", "logs"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        config.dump(self.config_path)
        return ClusterConfig.load(self.config_path)

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
        return [self.python, "-m", "semcache", "node", "--config", str(self.config_path),
                "--replica", replica_id]

    def _pid_file(self, replica_id: str) -> Path:
        return self.directory / "run" / f"{replica_id}.pid"

    def pid(self, replica_id: str) -> int | None:
        """The pid of the running node serving ``replica_id``, or None if none runs."""
        try:
            pid = int(self._pid_file(replica_id).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_node(pid, replica_id) else None

    def start(self, replica_id: str) -> subprocess.Popen[bytes]:
        """Start the node of ``replica_id`` in the background (it must not be running).

        Raises:
            ConfigurationError: no such replica.
            ClusterError: it is already running.
        """
        self.config().replica(replica_id)
        if self.pid(replica_id) is not None:
            raise ClusterError(f"{replica_id} is already running (pid {self.pid(replica_id)})")
        command = self.command(replica_id)
        (self.directory / "run").mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.extra_env}
        with open(self.directory / "logs" / f"{replica_id}.log", "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, env=env, start_new_session=True,  # outlives `cluster up`, no terminal signals
            )
        self._pid_file(replica_id).write_text(f"{process.pid}\n")
        (self.directory / "run" / f"{replica_id}.cmd").write_text(" ".join(command) + "\n")
        return process

    def start_all(self) -> list[str]:
        """Start every replica not already running; the ids started."""
        started = []
        for replica in self.config().replicas():
            if self.pid(replica.id) is None:
                self.start(replica.id)
                started.append(replica.id)
        return started

    def signal(self, replica_id: str, signum: int) -> int:
        """Send ``signum`` to the node of ``replica_id``; its pid.

        Raises:
            ClusterError: it is not running.
        """
        pid = self.pid(replica_id)
        if pid is None:
            raise ClusterError(f"{replica_id} is not running")
        os.kill(pid, signum)
        return pid

    def stop(self, replica_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT, kill: bool = False) -> bool:
        """Stop the node of ``replica_id`` (SIGTERM, SIGKILL after ``timeout``, or at once with ``kill``).

        Returns:
            True if it was running.
        """
        pid = self.pid(replica_id)
        if pid is None:
            self._pid_file(replica_id).unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        self._pid_file(replica_id).unlink(missing_ok=True)
        return True

    def stop_all(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every node this directory started; the ids that were running."""
        run = self.directory / "run"
        ids = sorted(p.stem for p in run.glob("*.pid")) if run.is_dir() else []
        running = [replica_id for replica_id in ids if self.pid(replica_id) is not None]
        for replica_id in running:  # TERM them all first, so they shut down in parallel
            pid = self.pid(replica_id)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGTERM)
        for replica_id in ids:
            self.stop(replica_id, timeout=timeout)
        return running

    # ------------------------------------------------------------- health
    def connect(self, address: str, timeout: float = 2.0) -> Any:
        """A NodeClient for ``address`` with this cluster's token."""
        from semcache.cluster._flight import NodeClient

        token = self.config().token or None
        return NodeClient(address, token=token, timeout=timeout)

    def health(self, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
        """``{replica id: health dict}`` of every replica; ``{"error": ...}`` for those that did not answer."""
        out: dict[str, dict[str, Any]] = {}
        for replica in self.config().replicas():
            out[replica.id] = self._health_of(replica.rpc, timeout)
        return out

    def _health_of(self, address: str, timeout: float) -> dict[str, Any]:
        try:
            with _closing(self.connect(address, timeout)) as node:
                return dict(node.health())
        except ClusterError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def leaders(self, timeout: float = 2.0) -> dict[str, str | None]:
        """``{shard id: leader rpc address or None}``, as the replicas report it."""
        health = self.health(timeout)
        out: dict[str, str | None] = {}
        for shard in self.config().shards:
            out[shard.id] = _agreed_leader([health[r.id] for r in shard.replicas], shard.replicas)
        return out

    def wait_for_leaders(self, timeout: float = DEFAULT_UP_TIMEOUT,
                         on_wait: Callable[[dict[str, str | None]], None] | None = None) -> dict[str, str]:
        """Block until every shard has a leader; ``{shard: leader rpc}``.

        Raises:
            ClusterError: some shard had no leader after ``timeout`` seconds (the logs say why).
        """
        deadline = time.monotonic() + timeout
        while True:
            leaders = self.leaders(timeout=1.0)
            if all(leaders.values()):
                return {shard: leader for shard, leader in leaders.items() if leader}
            if on_wait is not None:
                on_wait(leaders)
            if time.monotonic() >= deadline:
                missing = [shard for shard, leader in leaders.items() if not leader]
                raise ClusterError(
                    f"no leader after {timeout:.0f}s for {missing}; see the logs in {self.directory / 'logs'}"
                )
            time.sleep(POLL * 3)

    def status(self, timeout: float = 2.0) -> list[ShardStatus]:
        """Per shard: leader, term, commit index, entries, and each replica's lag behind the leader."""
        health = self.health(timeout)
        out = []
        for shard in self.config().shards:
            rows = {r.id: health[r.id] for r in shard.replicas}
            leader_id = next((rid for rid, h in rows.items() if h.get("role") == "leader"), None)
            lead = rows.get(leader_id) if leader_id else None
            replicas = []
            for replica in shard.replicas:
                h = rows[replica.id]
                lag = None
                if lead is not None and "error" not in h:
                    lag = max(0, int(lead.get("commit_index", 0)) - int(h.get("applied", 0)))
                replicas.append(ReplicaStatus(
                    replica.id, replica.rpc, self.pid(replica.id), h.get("role"), h.get("term"),
                    h.get("commit_index"), h.get("applied"), h.get("entries"), lag, h.get("error"),
                    h.get("index_queue"),
                ))
            out.append(ShardStatus(
                shard.id,
                None if lead is None else str(lead.get("leader") or shard_replica(shard, leader_id).rpc),
                None if lead is None else lead.get("term"),
                None if lead is None else lead.get("commit_index"),
                None if lead is None else lead.get("entries"),
                tuple(replicas),
            ))
        return out

    def wait_caught_up(self, replica_id: str, timeout: float = DEFAULT_UP_TIMEOUT) -> int:
        """Block until ``replica_id`` has applied everything its leader had committed when asked; the lag seen.

        Raises:
            ClusterError: it did not catch up within ``timeout``.
        """
        shard = self.config().shard_of(replica_id)
        deadline = time.monotonic() + timeout
        target: int | None = None
        while time.monotonic() < deadline:
            health = {r.id: self._health_of(r.rpc, 1.0) for r in shard.replicas}
            lead = next((h for h in health.values() if h.get("role") == "leader"), None)
            if lead is not None and target is None:
                target = int(lead.get("commit_index", 0))
            mine = health.get(replica_id, {})
            if target is not None and "error" not in mine and int(mine.get("applied", -1)) >= target:
                return 0
            time.sleep(POLL * 2)
        raise ClusterError(f"{replica_id} did not catch up to index {target} within {timeout:.0f}s")

    # -------------------------------------------------------- membership
    def add_replica(self, shard_id: str, *, timeout: float = DEFAULT_UP_TIMEOUT) -> Replica:
        """Add a replica to ``shard_id`` while it serves: new ports, start it, join it, wait until it caught up.

        Raises:
            ConfigurationError: no such shard.
            ClusterError: the shard has no leader, or the new replica did not catch up.
        """
        config = self.config()
        shard = next((s for s in config.shards if s.id == shard_id), None)
        if shard is None:
            raise ConfigurationError(f"no shard {shard_id!r} in {self.config_path}")
        taken = {r.id for r in config.replicas()}
        number = next(n for n in range(len(taken) + 1) if f"{shard_id}-r{n}" not in taken)
        raft_port, rpc_port = free_ports(2)
        host = shard.replicas[0].raft.rpartition(":")[0]
        new = Replica(f"{shard_id}-r{number}", f"{host}:{raft_port}", f"grpc://{host}:{rpc_port}")
        leader = self.wait_for_leaders(timeout)[shard_id]
        with _closing(self.connect(leader, timeout=max(5.0, config.commit_timeout + 1))) as node:
            node.add_replica(new.id, new.raft, new.rpc)
        config.with_shard(replace(shard, replicas=(*shard.replicas, new))).dump(self.config_path)
        self.start(new.id)
        self.wait_caught_up(new.id, timeout)
        return new

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
        with _closing(self.connect(leader, timeout=max(5.0, config.commit_timeout + 1))) as node:
            node.remove_replica(replica_id)
        self.stop(replica_id)
        config.with_shard(replace(shard, replicas=tuple(r for r in shard.replicas if r.id != replica_id))).dump(
            self.config_path
        )

    # ------------------------------------------------------------ up/down
    def up(self, shards: int = 2, replicas: int = 3, *, timeout: float = DEFAULT_UP_TIMEOUT,
           **settings: Any) -> dict[str, str]:
        """Create the cluster (unless this directory has one), start every node, wait for leaders.

        Returns:
            ``{shard: leader rpc}``.
        """
        if not self.exists():
            self.create(shards, replicas, **settings)
        self.start_all()
        return self.wait_for_leaders(timeout)

    def down(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every node; the data stays (``up`` again brings it back)."""
        return self.stop_all(timeout=timeout)


def shard_replica(shard: ShardConfig, replica_id: str | None) -> Replica:
    return next(r for r in shard.replicas if r.id == replica_id)


def _agreed_leader(health: Sequence[dict[str, Any]], replicas: Sequence[Replica]) -> str | None:
    """The shard's leader if a replica says it leads and has a quorum."""
    for h, replica in zip(health, replicas, strict=True):
        if h.get("role") == "leader" and h.get("has_quorum", True):
            return str(h.get("leader") or replica.rpc)
    return None


def format_status(shards: Sequence[ShardStatus]) -> str:
    """``cluster status`` as a text table."""
    lines = []
    for shard in shards:
        lines.append(
            f"{shard.id}: leader {shard.leader or 'NONE'}  term {_show(shard.term)}  "
            f"commit {_show(shard.commit_index)}  entries {_show(shard.entries)}"
        )
        lines.append(
            f"  {'replica':<16} {'pid':>7} {'role':<10} {'term':>5} {'applied':>8} {'lag':>5} {'to index':>8}  rpc"
        )
        for r in shard.replicas:
            role = r.role or ("DOWN" if r.error else "?")
            lines.append(
                f"  {r.id:<16} {_show(r.pid):>7} {role:<10} {_show(r.term):>5} {_show(r.applied):>8} "
                f"{_show(r.lag):>5} {_show(r.index_queue):>8}  {r.rpc}"
            )
    return "\n".join(lines)


def _show(value: object) -> str:
    return "-" if value is None else str(value)


@contextlib.contextmanager
def _closing(node: Any) -> Iterator[Any]:
    try:
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (started by this process, not reaped yet) is dead for our purpose.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _is_our_node(pid: int, replica_id: str) -> bool:
    """True if ``pid`` is alive and is the node of ``replica_id`` (not a recycled pid)."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return b"--replica" in argv and replica_id.encode() in argv
