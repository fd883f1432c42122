"""The node processes of a local cluster: start them, find them by pid file, signal and stop them.

Every node is an ordinary background process started as
``python -m semcache node --config D/cluster.toml --replica ID``
(the same as ``semcache node --config ... --replica ...``), in its own session
so it outlives the command that started it.  A pid file counts only while its
process is alive and is that replica's node (pids are recycled).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from semcache.cluster._local.files import ClusterDirectory
from semcache.errors import ClusterError

DEFAULT_STOP_TIMEOUT = 10.0
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed process to disappear


class NodeSupervisor:
    """Starts and stops the node processes of one cluster directory, tracked by their pid files.

    Args:
        files: the cluster directory.
        python: the interpreter that runs the nodes.
        env: extra environment for the node processes.
    """

    def __init__(self, files: ClusterDirectory, *, python: str, env: dict[str, str]) -> None:
        self.files = files
        self.python = python
        self.extra_env = env

    def command(self, replica_id: str) -> list[str]:
        """The command line that runs ``replica_id`` (the same every time it starts)."""
        return [self.python, "-m", "semcache", "node", "--config", str(self.files.config_path),
                "--replica", replica_id]

    def pid(self, replica_id: str) -> int | None:
        """The pid of the running node serving ``replica_id``, or None if none runs."""
        try:
            pid = int(self.files.pid_file(replica_id).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if is_our_node(pid, replica_id) else None

    def start(self, replica_id: str, *, extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Start the node of ``replica_id`` in the background (it must not be running).

        ``extra_args`` are added to this start only (the recorded command line stays the usual one).

        Raises:
            ConfigurationError: no such replica.
            ClusterError: it is already running.
        """
        self.files.config().replica(replica_id)
        if self.pid(replica_id) is not None:
            raise ClusterError(f"{replica_id} is already running (pid {self.pid(replica_id)})")
        command = self.command(replica_id)
        self.files.make_dirs()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.extra_env}
        with open(self.files.log_file(replica_id), "ab") as log:
            process = subprocess.Popen(
                command + list(extra_args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.files.path, env=env, start_new_session=True,  # outlives `cluster up`, no terminal signals
            )
        self.files.pid_file(replica_id).write_text(f"{process.pid}\n")
        self.files.command_file(replica_id).write_text(" ".join(command) + "\n")
        return process

    def start_all(self) -> list[str]:
        """Start every replica not already running; the ids started."""
        started = []
        for replica in self.files.config().replicas():
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
            self.files.pid_file(replica_id).unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, KILL_WAIT)
        self.files.pid_file(replica_id).unlink(missing_ok=True)
        return True

    def stop_all(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every node this directory started and wait until their processes are gone; the ids that were
        running.

        All get SIGTERM at once (so they shut down in parallel); those still there after ``timeout`` get
        SIGKILL.  It returns only when every process has exited.

        Raises:
            ClusterError: a process survived SIGKILL for ``KILL_WAIT`` seconds (it is named).
        """
        ids = self.files.replicas_with_pid_files()
        running = {replica_id: pid for replica_id in ids if (pid := self.pid(replica_id)) is not None}
        for pid in running.values():
            _send(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            _send(pid, signal.SIGTERM)
        stubborn = wait_all_gone(running, timeout)
        for pid in stubborn.values():
            _send(pid, signal.SIGKILL)
        left = wait_all_gone(stubborn, KILL_WAIT)
        for replica_id in ids:
            if replica_id not in left:
                self.files.pid_file(replica_id).unlink(missing_ok=True)
        if left:
            raise ClusterError(f"node processes still running after SIGKILL: {left}")
        return list(running)

    def exited(self, replica_ids: Sequence[str]) -> list[str]:
        """Those of ``replica_ids`` whose node process is no longer running (started here, then gone)."""
        return [replica_id for replica_id in replica_ids if self.pid(replica_id) is None]


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
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


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True if it did."""
    return not wait_all_gone({"": pid}, timeout)


def wait_all_gone(pids: dict[str, int], timeout: float) -> dict[str, int]:
    """Wait up to ``timeout`` seconds for every process of ``{name: pid}`` to exit; those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def is_our_node(pid: int, replica_id: str) -> bool:
    """True if ``pid`` is alive and is the node of ``replica_id`` (not a recycled pid)."""
    if not alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    if not any(argv):
        # Its arguments are unreadable for a moment while it execs (just started) or exits (just stopped);
        # either way it is still the process the pid file names.
        return True
    return b"--replica" in argv and replica_id.encode() in argv
