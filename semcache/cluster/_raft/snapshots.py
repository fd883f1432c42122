"""Raft snapshots of a shard: pysyncobj's serializer, serialize-checker and deserializer hooks.

A snapshot is :meth:`ShardState.snapshot` (hnswlib ``save_index``) plus the
Raft metadata, tarred (uncompressed) into the file pysyncobj asks for, not its
default gzip-pickle of the object; the same file is what a lagging or wiped
follower receives.

pysyncobj calls the serializer in its tick thread, and a snapshot of a large
shard takes long enough (0.3-0.8 s at 12K MiniLM vectors, growing linearly)
to delay heartbeats past an election timeout.  So the tick thread only
queues a snapshot request behind the committed batches.  The applier thread
reaches it once the state is exactly the state at the applied index, and
forks: the child writes that copy-on-write image and exits, while the parent
applies on.  Without fork the applier writes the snapshot itself (writes
wait, heartbeats do not).  The serialize checker tells pysyncobj when the
file is complete; only then does it drop the journal entries it covers.

Restoring is split in two so that a large snapshot received from the leader
never holds up the tick thread: :meth:`Snapshots.prepare` unpacks a file and
restores its state (any thread; :mod:`.transfer` runs it in the background),
:meth:`Snapshots.stage` keeps the result, and pysyncobj's deserializer hook
(:meth:`Snapshots.deserialize`, tick thread) installs a staged restore of the
very file it is asked for, or prepares one there and then (a restart).  While
a transfer reads or writes the snapshot file no new snapshot is started
(:meth:`Snapshots.hold_compaction_while`).
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache._engine.state import ShardState
from semcache.cluster._raft.applier import Applier, GuardedState
from semcache.cluster._raft.compat import SERIALIZER_STATE, SyncObj, TCPNode, journal, restart_election_timer
from semcache.cluster._raft.membership import MemberTable
from semcache.errors import InvalidInputError

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
SNAPSHOT_FILE = "raft.snapshot"

LogEntry = tuple[bytes, int, int]  # pysyncobj's (command, index, term)
RaftData = tuple[Any, Any, Any]  # what pysyncobj hands the serializer: (last entry, previous entry, cluster nodes)


@dataclass
class PreparedRestore:
    """A snapshot file unpacked and its state restored, ready to be swapped in (:meth:`Snapshots.deserialize`)."""

    source: Path
    identity: tuple[int, int, int]  # the file's (inode, size, mtime in ns) when it was read
    meta: dict[str, Any]
    state: ShardState

    @property
    def last_index(self) -> int:
        """The Raft index of the last entry the snapshot covers."""
        return int(self.meta["last"][1])


def file_identity(path: Path) -> tuple[int, int, int]:
    """What tells one version of a file from another it was replaced with (inode, size, mtime in ns)."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass
class SnapshotStats:
    """How many snapshots this replica wrote and what the last one cost (for the status)."""

    taken: int = 0
    seconds: float = 0.0  # how long the last snapshot took to write
    stall_seconds: float = 0.0  # how long it held up the tick thread
    pause_seconds: float = 0.0  # how long it held up the applier (the fork, or the whole write)


class Snapshots:
    """Writing snapshots off the tick thread, and restoring them (with the journal aligned to them).

    Args:
        syncobj: the replica (its journal and election timer, when restoring).
        guarded: the state to snapshot and to swap on restore.
        members: the member table saved with the state.
        applier: queues the write behind the committed batches.
        data_dir: the replica's data directory (the snapshot file and scratch space).
        fork: write in a forked child (where ``os.fork`` exists and the config allows it).
        restore_state: turns a restored ``state`` directory into a ready ShardState.
        election_timeout: seconds to postpone this follower's next election after a restore.
    """

    def __init__(
        self,
        syncobj: SyncObj,
        *,
        guarded: GuardedState,
        members: MemberTable,
        applier: Applier,
        data_dir: Path,
        fork: bool,
        restore_state: Callable[[Path], ShardState],
        election_timeout: float,
    ) -> None:
        self._syncobj = syncobj
        self._guarded = guarded
        self._members = members
        self._applier = applier
        self._data_dir = data_dir
        self._fork = fork and hasattr(os, "fork")
        self._restore_state = restore_state
        self._election_timeout = election_timeout
        self.stats = SnapshotStats()
        self._pending = False
        self._child: tuple[int, float] | None = None
        self._outcome = SERIALIZER_STATE.NOT_SERIALIZING
        self._held_by: Callable[[], bool] = lambda: False
        self._staged: PreparedRestore | None = None
        self._staged_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._data_dir / SNAPSHOT_FILE

    @property
    def writing(self) -> bool:
        """Whether a snapshot is being written now (queued, or its forked child still running)."""
        return self._pending or self._child is not None

    def hold_compaction_while(self, busy: Callable[[], bool]) -> None:
        """Start no new snapshot while ``busy()``: a transfer is reading this file or about to replace it."""
        self._held_by = busy

    # ------------------------------------------------------------ writing
    def serialize(self, filename: str, raft_data: RaftData) -> None:
        """pysyncobj's serializer hook (tick thread): hand the snapshot to the applier thread."""
        started = time.perf_counter()
        self._pending = True
        self._applier.run_in_order(lambda: self._take(raft_data))
        self.stats.stall_seconds = time.perf_counter() - started
        # pysyncobj now renames ``filename`` into place; nothing creates it (the
        # snapshot goes straight to the real file), so that rename fails harmlessly
        # and check() tells pysyncobj the outcome.

    def _take(self, raft_data: RaftData) -> None:
        """Applier thread, with every earlier batch applied: write the snapshot (in a forked child if possible)."""
        started = time.perf_counter()
        members = self._members.to_json()  # copied here: a forked child must never take a lock
        if self._fork:
            # Fork with the state lock held, so that no reader is inside hnswlib (and
            # perhaps holding one of its mutexes) when the image is taken: the child
            # indexes any deferred inserts before saving, and those take its mutexes.
            with self._guarded.lock:
                pid = os.fork()
            if pid == 0:  # the child: write, then leave without running any of the parent's cleanup
                code = 1
                try:
                    write_snapshot(self.path, self._guarded.state, raft_data, members)
                    code = 0
                finally:
                    os._exit(code)
            self._child = (pid, started)
        else:
            try:
                write_snapshot(self.path, self._guarded.state, raft_data, members)
                self._outcome = SERIALIZER_STATE.SUCCESS
                self.stats.taken += 1
            except Exception:  # noqa: BLE001 - pysyncobj retries at the next compaction
                logger.exception("snapshot to %s failed", self.path)
                self._outcome = SERIALIZER_STATE.FAILED
            self.stats.seconds = time.perf_counter() - started
        self.stats.pause_seconds = time.perf_counter() - started
        self._pending = False  # last: the checker reads the outcome after this

    def check(self) -> int:
        """pysyncobj's serialize checker (tick thread): has the last snapshot finished?"""
        if self._pending:
            return int(SERIALIZER_STATE.SERIALIZING)
        if self._child is not None:
            pid, started = self._child
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                return int(SERIALIZER_STATE.SERIALIZING)
            self._child = None
            self.stats.seconds = time.perf_counter() - started
            if status == 0:
                self.stats.taken += 1
                return int(SERIALIZER_STATE.SUCCESS)
            logger.error("snapshot child writing %s failed with status %s", self.path, status)
            return int(SERIALIZER_STATE.FAILED)
        outcome, self._outcome = self._outcome, SERIALIZER_STATE.NOT_SERIALIZING
        if outcome == SERIALIZER_STATE.NOT_SERIALIZING and self._held_by():
            # pysyncobj starts no compaction while one is "serializing"; a transfer in progress would
            # otherwise lose the journal entries that follow the file it sends.
            return int(SERIALIZER_STATE.SERIALIZING)
        return int(outcome)

    # ---------------------------------------------------------- restoring
    def prepare(self, source: Path) -> PreparedRestore:
        """Unpack ``source`` and restore its state, without installing it (any thread; slow for a large file)."""
        identity = file_identity(source)
        with tempfile.TemporaryDirectory(prefix="restore-", dir=self._data_dir) as tmp:
            meta = read_snapshot(source, Path(tmp))
            state = self._restore_state(Path(tmp) / "state")
        return PreparedRestore(source, identity, meta, state)

    def stage(self, prepared: PreparedRestore | None) -> None:
        """Keep ``prepared`` for the next :meth:`deserialize` of the same file (None: drop what is staged)."""
        with self._staged_lock:
            self._staged = prepared

    def _take_staged(self, source: Path) -> PreparedRestore | None:
        """The staged restore if it was made from ``source`` as the file is now."""
        with self._staged_lock:
            prepared, self._staged = self._staged, None
        if prepared is None or prepared.source != source or prepared.identity != file_identity(source):
            return None
        return prepared

    def deserialize(self, filename: str) -> RaftData:
        """pysyncobj's deserializer hook: install the state and members (staged, or restored now); the Raft metadata."""
        source = Path(filename)
        prepared = self._take_staged(source) or self.prepare(source)
        self._applier.wait_applied()  # nothing older may land on the new state
        with self._guarded.lock:
            self._guarded.state = prepared.state
            self._members.restore(prepared.meta["members"])
        meta = prepared.meta
        last, prev = _entry_from_json(meta["last"]), _entry_from_json(meta["prev"])
        self._align_journal(prev, last)
        # We are inside the leader's snapshot message, i.e. we just heard from it:
        # restart the election timer, or a restore longer than the election timeout
        # would make this follower campaign at its next tick and depose a healthy leader.
        restart_election_timer(self._syncobj, self._election_timeout)
        return last, prev, [TCPNode(address) for address in meta["cluster"]]

    def _align_journal(self, prev: LogEntry, last: LogEntry) -> None:
        """Drop journal entries the snapshot covers, so pysyncobj keeps the ones after it.

        The snapshot file is complete before pysyncobj trims its journal.  A node
        that stops in between restarts with a journal that still begins before
        the snapshot; pysyncobj would then discard the whole journal, including
        committed entries newer than the snapshot.  Trimming it to begin at the
        snapshot's last two entries keeps those entries.
        """
        log = journal(self._syncobj)
        if log is None or len(log) < 2 or (log[0] == prev and log[1] == last):
            return
        position = prev[1] - log[0][1]
        if 0 < position < len(log) - 1 and log[position] == prev and log[position + 1] == last:
            log.deleteEntriesTo(position)


def write_snapshot(target: Path, state: ShardState, raft_data: RaftData, members: list[dict[str, Any]]) -> None:
    """The state plus Raft metadata as an uncompressed tar, atomically replacing ``target``.

    Only the tick thread mutates the state, and it is waiting for this (or this
    is a forked copy), so the state is read without its lock.
    """
    last, prev, cluster = raft_data
    part = target.with_name(target.name + ".part")
    with tempfile.TemporaryDirectory(prefix="snap-", dir=target.parent) as tmp:
        root = Path(tmp)
        state.snapshot(root / "state")
        meta = {
            "format": SNAPSHOT_FORMAT,
            "last": _entry_to_json(last),
            "prev": _entry_to_json(prev),
            "cluster": sorted(node.id for node in cluster),
            "members": members,
        }
        (root / "raft.json").write_text(json.dumps(meta, sort_keys=True))
        with tarfile.open(part, "w") as tar:
            tar.add(root / "raft.json", arcname="raft.json")
            tar.add(root / "state", arcname="state")
    with open(part, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(part, target)


def read_snapshot(source: Path, root: Path) -> dict[str, Any]:
    """Unpack a snapshot file into ``root`` (the state under ``root / "state"``); return its Raft metadata.

    Raises:
        InvalidInputError: the file was written in an unknown format.
    """
    with tarfile.open(source, "r") as tar:
        tar.extractall(root, filter="data")
    meta: dict[str, Any] = json.loads((root / "raft.json").read_text())
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise InvalidInputError(f"unknown shard snapshot format {meta.get('format')!r}")
    return meta


def _entry_to_json(entry: LogEntry) -> list[Any]:
    command, index, term = entry
    return [bytes(command).hex(), int(index), int(term)]


def _entry_from_json(data: list[Any]) -> LogEntry:
    return bytes.fromhex(data[0]), int(data[1]), int(data[2])
