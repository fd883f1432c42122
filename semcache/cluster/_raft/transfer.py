"""Sending a snapshot to a replica that needs one, and receiving it: chunked, checksummed, acknowledged.

pysyncobj 0.3.17 streams a snapshot as unnumbered 64 KiB pieces and the
receiver answers nothing until the end.  The leader's side of the link, which
reads nothing meanwhile, is dropped by pysyncobj's connection timeout (3.5 s
without reading) and the next transfer starts from 0 again, for ever; or, when
the link came back before the leader noticed, the leader carries on mid-file
into the receiver's old partial file, which is then installed truncated
(issue 11; the account is in ``docs/internals/replication.md``).  semcache
owns the transfer instead; :class:`.compat.RaftNode` wires it in.

Leader (:class:`SnapshotSender`, tick thread)
    For each connected follower whose next index lies in the compacted prefix
    of the log, it opens the snapshot file (an open file stays readable when a
    newer snapshot replaces it) and sends it in :data:`CHUNK_BYTES` chunks, each
    with its offset and SHA-256, the last with the whole file's checksum (the
    SHA-256 of its size and every chunk's SHA-256, in order, which binds the
    whole content as a hash of the file would, for one hash per byte): at most
    :data:`WINDOW_BYTES` ahead of what the follower acknowledged, and never
    more than about a chunk queued on the connection.  When there is no chunk
    to send, a ``poll`` every heartbeat stands in for pysyncobj's heartbeat
    (such a follower is kept out of pysyncobj's own send loop).  A follower
    silent for :data:`STALL_SECONDS`, one that refuses a chunk, or a dropped
    link ends the transfer; the next starts from offset 0 under a new id.
Follower (:class:`SnapshotReceiver`, tick thread and one background thread)
    Writes each chunk at the offset it expects (anything else is refused) to a
    ``raft.snapshot.incoming.<id>`` file and acknowledges every message, which
    keeps the leader's connection alive.  After the last chunk it compares the
    whole file's checksum; only then, in the background, it fsyncs the file,
    renames it over ``raft.snapshot`` and unpacks and restores it
    (:meth:`.snapshots.Snapshots.prepare`).  The next ``poll`` installs it
    (:meth:`.snapshots.Snapshots.deserialize` swaps the prepared state in).
    A partial or mismatched file is deleted, never renamed, never installed.

While either side has a transfer in progress no new snapshot is started
(:meth:`.snapshots.Snapshots.hold_compaction_while`): the journal entries
after the file being sent must still be there once it is installed.

A chunk that does not start a transfer the receiver knows is refused:

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     receiver = SnapshotReceiver(directory=Path(tmp), prepare=None, stage=None, busy=lambda: False)
...     ack, install = receiver.on_message({"kind": "chunk", "transfer": "t1", "offset": 512, "size": 9,
...                                         "data": b"x", "sha256": b"", "leader_commit": 7})
>>> ack["error"], install, receiver.leader_commit
('no transfer t1 in progress here (a transfer starts at offset 0)', False, 7)
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from semcache.cluster._raft.snapshots import SNAPSHOT_FILE, PreparedRestore, Snapshots
from semcache.cluster._sizes import SNAPSHOT_CHUNK_BYTES

logger = logging.getLogger(__name__)

CHUNK_BYTES = SNAPSHOT_CHUNK_BYTES
WINDOW_BYTES = 16 * CHUNK_BYTES  # sent but not yet acknowledged, at most (8 MiB)
STALL_SECONDS = 10.0  # a follower that acknowledges nothing for this long: the transfer ends (and starts again)
RESTART_PAUSE = 1.0  # seconds between a failed transfer and the next one to the same follower
REPORT_SECONDS = 5.0  # progress is logged this often on both sides
MB = 1_000_000  # progress is reported in decimal megabytes, as the benchmarks report it
INCOMING_PREFIX = SNAPSHOT_FILE + ".incoming."
STOCK_INCOMING = SNAPSHOT_FILE + ".1.tmp"  # pysyncobj's own partial file, left by older versions

# The receiver's phases, as it reports them in every acknowledgement and in its status.
IDLE, RECEIVING, PREPARING, READY, INSTALLED, FAILED = "idle", "receiving", "preparing", "ready", "installed", "failed"


def _megabytes(size: int) -> float:
    return round(size / MB, 1)


@dataclass
class Progress:
    """How far one transfer got, on either side (what the status shows and the logs say)."""

    transfer: str
    size: int
    started: float
    done: int = 0  # bytes acknowledged (leader) or written (follower)
    phase: str = RECEIVING
    error: str | None = None
    finished: float | None = None

    def report(self, now: float) -> dict[str, Any]:
        seconds = (self.finished or now) - self.started
        return {
            "transfer": self.transfer,
            "phase": self.phase,
            "mb": _megabytes(self.done),
            "size_mb": _megabytes(self.size),
            "percent": round(100.0 * self.done / self.size, 1) if self.size else 100.0,
            "seconds": round(seconds, 1),
            "mb_per_s": round(self.done / MB / seconds, 1) if seconds > 0 else None,
            "error": self.error,
        }

    def line(self, now: float) -> str:
        r = self.report(now)
        return (f"{r['mb']:.1f} of {r['size_mb']:.1f} MB ({r['percent']:.0f} %) in {r['seconds']:.1f} s"
                f" ({r['mb_per_s'] or 0:.1f} MB/s)")


# ---------------------------------------------------------------------------------------------------- the leader
@dataclass
class Outgoing:
    """One transfer to one follower, as the leader sees it."""

    file: BinaryIO
    progress: Progress
    last_heard: float
    sent: int = 0
    whole: Any = field(default_factory=hashlib.sha256)  # over the chunks' digests: see file_checksum
    next_report: float = 0.0


def chunk_checksum(data: bytes) -> bytes:
    """A chunk's SHA-256."""
    return hashlib.sha256(data).digest()


def file_checksum(size: int, chunk_digests: Any) -> bytes:
    """The whole file's checksum: SHA-256 over its size and its chunks' SHA-256s in order (``chunk_digests``
    is a sha256 object fed with them)."""
    return hashlib.sha256(size.to_bytes(8, "big") + chunk_digests.digest()).digest()


class SnapshotSender:
    """The leader's transfers, one per follower that needs the snapshot (tick thread only).

    Args:
        source: the snapshot file.
        busy: True while a snapshot is being written (a transfer then waits for the new file).
        send: sends a payload to a node inside an ``append_entries`` message; False if the link is down.
        backlog: bytes queued on the link to a node, not yet handed to the socket.
        heartbeat: seconds between two messages to a follower with nothing else to send.
    """

    def __init__(self, *, source: Path, busy: Callable[[], bool], send: Callable[[Any, dict[str, Any]], bool],
                 backlog: Callable[[Any], int], heartbeat: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._busy = busy
        self._send = send
        self._backlog = backlog
        self._heartbeat = heartbeat
        self._clock = clock
        self._out: dict[Any, Outgoing] = {}
        self._last_message: dict[Any, float] = {}
        self._not_before: dict[Any, float] = {}
        self.completed = 0  # transfers installed by their follower
        self.last: dict[str, dict[str, Any]] = {}  # per node id: the last transfer that ended

    def active(self) -> bool:
        return bool(self._out)

    def pump(self, needing: Collection[Any], connected: Collection[Any], leader_commit: int) -> None:
        """Send what the window allows to every node in ``needing``; end transfers to nodes no longer in it
        (those still ``connected`` moved past the snapshot: they installed it)."""
        now = self._clock()
        for node in [node for node in self._out if node not in needing]:
            self._end(node, now, installed=node in connected)
        for node in list(self._last_message):
            if node not in needing:
                del self._last_message[node]
        for node in needing:
            self._pump_one(node, now, leader_commit)

    def _pump_one(self, node: Any, now: float, leader_commit: int) -> None:
        out = self._out.get(node)
        if out is None and now >= self._not_before.get(node, 0.0) and not self._busy():
            out = self._start(node, now)
        if out is not None and now - out.last_heard > STALL_SECONDS:
            self._abort(node, f"it acknowledged nothing for {STALL_SECONDS:.0f} s", now)
            out = None
        sent = False
        while out is not None and out.sent < out.progress.size and out.sent - out.progress.done < WINDOW_BYTES \
                and self._backlog(node) < CHUNK_BYTES:
            if not self._send_chunk(node, out, leader_commit):
                self._abort(node, "the link dropped", now)
                return
            sent = True
        if sent:
            self._last_message[node] = now
        elif now - self._last_message.get(node, float("-inf")) >= self._heartbeat:
            transfer = None if out is None else out.progress.transfer
            self._send(node, {"kind": "poll", "transfer": transfer, "leader_commit": leader_commit})
            self._last_message[node] = now
        if out is not None and now >= out.next_report:
            out.next_report = now + REPORT_SECONDS
            logger.info("snapshot %s to %s: %s acknowledged, follower %s", out.progress.transfer, node.id,
                        out.progress.line(now), out.progress.phase)

    def _start(self, node: Any, now: float) -> Outgoing | None:
        try:
            handle = open(self._source, "rb")  # noqa: SIM115 - kept open for the whole transfer, closed in _close
        except FileNotFoundError:
            self._not_before[node] = now + RESTART_PAUSE
            return None
        size = os.fstat(handle.fileno()).st_size
        out = Outgoing(handle, Progress(uuid.uuid4().hex[:12], size, now), last_heard=now,
                       next_report=now + REPORT_SECONDS)
        self._out[node] = out
        logger.info("sending snapshot %s (%.1f MB) to %s", out.progress.transfer, size / MB, node.id)
        return out

    def _send_chunk(self, node: Any, out: Outgoing, leader_commit: int) -> bool:
        offset = out.sent
        data = out.file.read(CHUNK_BYTES)
        if not data:
            return False  # the file is shorter than it was when opened: cannot happen to a renamed-in file
        digest = chunk_checksum(data)
        out.whole.update(digest)
        out.sent += len(data)
        payload: dict[str, Any] = {
            "kind": "chunk", "transfer": out.progress.transfer, "offset": offset, "size": out.progress.size,
            "data": data, "sha256": digest, "leader_commit": leader_commit,
        }
        if out.sent >= out.progress.size:
            payload["file_sha256"] = file_checksum(out.progress.size, out.whole)
        return self._send(node, payload)

    def on_ack(self, node: Any, ack: Mapping[str, Any]) -> None:
        """A follower acknowledged a chunk or a poll (its phase, bytes written, or why it refused)."""
        out = self._out.get(node)
        if out is None or ack.get("transfer") != out.progress.transfer:
            return
        now = self._clock()
        out.last_heard = now
        error = ack.get("error")
        if error:
            self._abort(node, f"it refused it: {error}", now)
            return
        out.progress.done = max(out.progress.done, min(int(ack.get("received") or 0), out.sent))
        out.progress.phase = str(ack.get("phase") or out.progress.phase)

    def _end(self, node: Any, now: float, *, installed: bool) -> None:
        """``node`` left snapshot mode: it ``installed`` the snapshot, or it disconnected, or we stopped leading."""
        out = self._out[node]
        if installed and out.progress.done >= out.progress.size:
            out.progress.phase = INSTALLED
            self.completed += 1
            logger.info("snapshot %s installed on %s: %s", out.progress.transfer, node.id, out.progress.line(now))
        else:
            out.progress.error = out.progress.error or "the follower disconnected or this node stopped leading"
            logger.warning("snapshot %s to %s stopped at %s: %s", out.progress.transfer, node.id,
                           out.progress.line(now), out.progress.error)
        self._close(node, now)

    def _abort(self, node: Any, reason: str, now: float) -> None:
        out = self._out[node]
        out.progress.error, out.progress.phase = reason, FAILED
        logger.warning("snapshot %s to %s failed at %s: %s; it starts again from the beginning",
                       out.progress.transfer, node.id, out.progress.line(now), reason)
        self._not_before[node] = now + RESTART_PAUSE
        self._close(node, now)

    def _close(self, node: Any, now: float) -> None:
        out = self._out.pop(node)
        out.progress.finished = now
        out.file.close()
        self.last[node.id] = out.progress.report(now)

    def clear(self) -> None:
        """This node stopped leading: end every transfer."""
        now = self._clock()
        for node in list(self._out):
            self._end(node, now, installed=False)
        self._last_message.clear()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per follower (Raft address): the transfer in progress, else the last one that ended."""
        now = self._clock()
        report = dict(self.last)
        report.update({node.id: out.progress.report(now) for node, out in self._out.items()})
        return report


# -------------------------------------------------------------------------------------------------- the follower
@dataclass
class Incoming:
    """One transfer from the leader, as this follower receives it."""

    progress: Progress
    path: Path
    file: BinaryIO | None
    whole: Any = field(default_factory=hashlib.sha256)  # over the chunks' digests: see file_checksum
    last_index: int | None = None  # of the snapshot, once prepared
    next_report: float = 0.0


class SnapshotReceiver:
    """This follower's side of a transfer (tick thread; the last steps in a background thread).

    Args:
        directory: the replica's data directory (the incoming file, then the snapshot file).
        prepare: unpacks and restores a snapshot file (:meth:`.snapshots.Snapshots.prepare`).
        stage: keeps a prepared restore for the install (:meth:`.snapshots.Snapshots.stage`).
        busy: True while this replica writes a snapshot of its own (the rename waits for it).
    """

    def __init__(self, *, directory: Path, prepare: Callable[[Path], PreparedRestore] | None,
                 stage: Callable[[PreparedRestore | None], None] | None, busy: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._directory = directory
        self._target = directory / SNAPSHOT_FILE
        self._prepare = prepare
        self._stage = stage
        self._busy = busy
        self._clock = clock
        self._lock = threading.Lock()  # the current transfer, between the tick thread and the worker
        self._current: Incoming | None = None
        self._worker: threading.Thread | None = None
        self._closing = threading.Event()
        self.leader_commit = 0  # the highest commit index the leader sent with a transfer message
        self.last: dict[str, Any] | None = None  # the last transfer that ended
        for stale in [*directory.glob(INCOMING_PREFIX + "*"), directory / STOCK_INCOMING]:
            stale.unlink(missing_ok=True)  # a partial file is never resumed

    def active(self) -> bool:
        """Whether a transfer is being received, checked or installed."""
        current = self._current
        return current is not None and current.progress.phase in (RECEIVING, PREPARING, READY)

    def on_message(self, payload: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """A chunk or poll from the leader: the acknowledgement to send back, and whether to install now."""
        commit = payload.get("leader_commit")
        if isinstance(commit, int):
            self.leader_commit = max(self.leader_commit, commit)
        kind, transfer = payload.get("kind"), payload.get("transfer")
        error = self._on_chunk(payload) if kind == "chunk" else None
        if kind not in ("chunk", "poll"):
            error = f"unknown snapshot message {kind!r}"
        current = self._current
        install = (kind == "poll" and current is not None and current.progress.transfer == transfer
                   and current.progress.phase == READY)
        ack = self.describe(transfer)
        if error is not None:
            ack["error"] = error
        return ack, install

    def describe(self, transfer: Any) -> dict[str, Any]:
        """What this follower knows of ``transfer``: bytes written, phase, and why it failed if it did."""
        current = self._current
        if current is not None and current.progress.transfer == transfer:
            return {"transfer": transfer, "received": current.progress.done, "phase": current.progress.phase,
                    "error": None}
        if self.last is not None and self.last["transfer"] == transfer:
            return {"transfer": transfer, "received": 0, "phase": self.last["phase"], "error": self.last["error"]}
        return {"transfer": transfer, "received": 0, "phase": IDLE, "error": None}

    def _on_chunk(self, payload: Mapping[str, Any]) -> str | None:
        """Write one chunk where it belongs; why it was refused (the transfer then ends), or None."""
        transfer, offset, size, data = (payload.get(name) for name in ("transfer", "offset", "size", "data"))
        if not (isinstance(transfer, str) and isinstance(offset, int) and isinstance(size, int)
                and isinstance(data, bytes)):
            return "a malformed chunk"
        current = self._current
        if offset == 0 and (current is None or current.progress.transfer != transfer):
            current = self._begin(transfer, size)
        if current is None or current.progress.transfer != transfer:
            return f"no transfer {transfer} in progress here (a transfer starts at offset 0)"
        if current.progress.phase != RECEIVING or current.file is None:
            return f"transfer {transfer} is {current.progress.phase}, not receiving"
        if offset != current.progress.done:
            return self._fail(current, f"a chunk at offset {offset}, expected {current.progress.done}")
        digest = chunk_checksum(data)
        if digest != payload.get("sha256"):
            return self._fail(current, f"the chunk at offset {offset} does not match its checksum")
        if offset + len(data) > size:
            return self._fail(current, f"a chunk ends at {offset + len(data)}, past the file's {size} bytes")
        current.file.write(data)
        current.whole.update(digest)
        current.progress.done += len(data)
        now = self._clock()
        if "file_sha256" in payload:
            return self._received(current, payload.get("file_sha256"), now)
        if now >= current.next_report:
            current.next_report = now + REPORT_SECONDS
            logger.info("receiving snapshot %s: %s", transfer, current.progress.line(now))
        return None

    def _begin(self, transfer: str, size: int) -> Incoming:
        """A new transfer (offset 0): whatever was in progress is dropped."""
        now = self._clock()
        path = self._directory / f"{INCOMING_PREFIX}{transfer}"
        with self._lock:
            previous = self._current
            if previous is not None and previous.progress.phase in (RECEIVING, PREPARING, READY):
                self._end(previous, FAILED, "superseded by a new transfer", now)
            current = Incoming(Progress(transfer, size, now), path, open(path, "wb"),  # noqa: SIM115 - closed in _end
                               next_report=now + REPORT_SECONDS)
            self._current = current
        if self._stage is not None:
            self._stage(None)
        logger.info("receiving snapshot %s (%.1f MB) from the leader", transfer, size / MB)
        return current

    def _received(self, current: Incoming, file_sha256: Any, now: float) -> str | None:
        """The last chunk arrived: check the whole file, then check, rename and restore it in the background."""
        if current.progress.done != current.progress.size:
            return self._fail(current, f"the file ends at {current.progress.done} of {current.progress.size} bytes")
        if file_checksum(current.progress.size, current.whole) != file_sha256:
            return self._fail(current, "the whole file does not match its checksum")
        assert current.file is not None
        current.file.close()
        current.file = None
        current.progress.phase = PREPARING
        logger.info("snapshot %s received and verified: %s; installing", current.progress.transfer,
                    current.progress.line(now))
        self._worker = threading.Thread(target=self._finish_in_background, args=(current,),
                                        name="semcache-snapshot-install", daemon=True)
        self._worker.start()
        return None

    def _finish_in_background(self, current: Incoming) -> None:
        """fsync, rename over the snapshot file once no snapshot of ours is being written, unpack and restore."""
        try:
            with open(current.path, "rb") as handle:
                os.fsync(handle.fileno())
            while self._busy() and not self._closing.wait(0.05):
                pass
            with self._lock:
                if self._current is not current or self._closing.is_set():
                    current.path.unlink(missing_ok=True)
                    return
                os.replace(current.path, self._target)
            _fsync_directory(self._directory)
            assert self._prepare is not None and self._stage is not None
            started = self._clock()
            prepared = self._prepare(self._target)
            with self._lock:
                if self._current is not current:
                    return
                self._stage(prepared)
                current.last_index = prepared.last_index
                current.progress.phase = READY
            logger.info("snapshot %s unpacked and restored in %.1f s; installing at the next message",
                        current.progress.transfer, self._clock() - started)
        except Exception as exc:  # noqa: BLE001 - reported to the leader, which starts again
            logger.exception("snapshot %s could not be installed", current.progress.transfer)
            with self._lock:
                if self._current is current:
                    self._end(current, FAILED, f"could not be installed: {exc}", self._clock())

    def expected_index(self) -> int | None:
        """The Raft index the staged snapshot ends at (what the install must leave applied)."""
        current = self._current
        return None if current is None else current.last_index

    def installed(self, ok: bool) -> None:
        """The install ran (tick thread); ``ok`` if the node now stands at the snapshot's index."""
        current = self._current
        if current is None:
            return
        with self._lock:
            if ok:
                self._end(current, INSTALLED, None, self._clock())
            else:
                self._end(current, FAILED, "the install did not take", self._clock())
        if ok:
            logger.info("snapshot %s installed at index %s", current.progress.transfer, current.last_index)
        else:
            logger.warning("snapshot %s did not install (expected index %s); the leader starts again",
                           current.progress.transfer, current.last_index)

    def abandon(self, reason: str) -> None:
        """Drop the transfer in progress (tick thread): the leader is sending log entries instead, so it is not
        sending this replica a snapshot any more (a new leader whose log still holds what this replica lacks)."""
        current = self._current
        if current is None or current.progress.phase not in (RECEIVING, PREPARING, READY):
            return
        with self._lock:
            self._end(current, FAILED, reason, self._clock())
        if self._stage is not None:
            self._stage(None)
        logger.info("snapshot %s dropped: %s", current.progress.transfer, reason)

    def _fail(self, current: Incoming, reason: str) -> str:
        with self._lock:
            self._end(current, FAILED, reason, self._clock())
        logger.warning("snapshot %s refused: %s; the leader starts it again", current.progress.transfer, reason)
        return reason

    def _end(self, current: Incoming, phase: str, error: str | None, now: float) -> None:
        """Close ``current`` (lock held): its file is deleted unless it was renamed into place."""
        if current.file is not None:
            current.file.close()
            current.file = None
        if phase != INSTALLED:
            current.path.unlink(missing_ok=True)
        current.progress.phase, current.progress.error, current.progress.finished = phase, error, now
        self.last = current.progress.report(now)
        if self._current is current:
            self._current = None

    def status(self) -> dict[str, Any] | None:
        """The transfer in progress, else the last one that ended (None: none since this node started)."""
        current = self._current
        return self.last if current is None else current.progress.report(self._clock())

    def close(self) -> None:
        """Stop: a transfer in progress is dropped (its partial file deleted)."""
        self._closing.set()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=5)
        with self._lock:
            if self._current is not None:
                self._end(self._current, FAILED, "this node stopped", self._clock())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotTransfer:
    """Both sides of this replica's snapshot transfers, and the compaction hold while either is busy.

    Args:
        snapshots: the replica's snapshot file, writer and restorer.
        data_dir: the replica's data directory.
        send, backlog, heartbeat: as for :class:`SnapshotSender` (the Raft node provides them).
    """

    def __init__(self, snapshots: Snapshots, *, data_dir: Path, send: Callable[[Any, dict[str, Any]], bool],
                 backlog: Callable[[Any], int], heartbeat: float) -> None:
        self.sender = SnapshotSender(source=snapshots.path, busy=lambda: snapshots.writing, send=send,
                                     backlog=backlog, heartbeat=heartbeat)
        self.receiver = SnapshotReceiver(directory=data_dir, prepare=snapshots.prepare, stage=snapshots.stage,
                                         busy=lambda: snapshots.writing)
        snapshots.hold_compaction_while(self.active)

    def active(self) -> bool:
        return self.sender.active() or self.receiver.active()

    def close(self) -> None:
        self.receiver.close()
