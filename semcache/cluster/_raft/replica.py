"""One replica of a Raft-replicated shard: a pysyncobj ``SyncObj`` around a :class:`ShardState`.

Every replica of a shard runs a :class:`ReplicatedShard`.  The leader turns
writes into :mod:`semcache._engine.commands`, encodes them and appends them to the Raft
log; every replica applies committed entries, in order, through the one
``@replicated`` method :meth:`ReplicatedShard.apply_batch` (a batch of
encoded commands: concurrent writes share one entry).  Commands carry
everything that could differ between replicas (vectors, timestamps, the keys
to evict), so replicas never consult their own clock or model while applying.

How pysyncobj 0.3.17 is used, and why:

* Messages go out uncompressed (:func:`send_raft_messages_uncompressed`):
  embeddings do not compress, and zlib cost CPU on every message.
* ``password`` is always set: pysyncobj unpickles what arrives on the Raft
  port, so only peers holding the secret (Fernet-encrypted traffic) may talk.
* ``bindAddress`` is always the configured Raft address: pysyncobj would
  otherwise bind ``0.0.0.0``.
* New entries go to the followers in the tick that appends them (a sync write
  never waits for the 0.1 s heartbeat), but the commit index does not get
  messages of its own: followers learn it from the next append or heartbeat.
  Stock pysyncobj offers either batching (``appendEntriesUseBatch=True``:
  writes wait for the heartbeat) or not (every commit then costs two more
  messages per follower, and their answers, which on a loaded 2-core machine
  took CPU from the writer being acknowledged).  So batching is on and a tick
  callback sends what the tick appended (:meth:`_send_new_entries`); with a
  pysyncobj lacking the private methods this needs, the stock unbatched mode is
  used instead.
* One log entry must stay under 64 KiB (larger entries take a broken chunked
  path), so :meth:`submit` refuses encoded commands over :data:`MAX_ENTRY_BYTES`
  and evictions are split into several commands.
* Snapshots use :meth:`ShardState.snapshot` (hnswlib ``save_index``) tarred
  into the file pysyncobj asks for, not its default gzip-pickle of the object;
  the same file is what a lagging or wiped follower receives.
* The journal is on disk, so a restarted replica replays snapshot + journal.
* A retried command may be applied twice: every command is idempotent.
* ``apply_batch`` never raises: an exception there would stop pysyncobj's
  tick thread from making progress.  Writes are validated before they are logged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import struct
import tarfile
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, SyncObjException, replicated, tcp_connection
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier

from semcache._engine.commands import Command, Delete, Evict, Expire, Put, decode_command, encode_command
from semcache._engine.eviction import AccessLog, choose_victims
from semcache._engine.inputs import Limits, wall_clock_ms
from semcache._engine.state import ShardState
from semcache.cluster._config import ClusterConfig, Replica
from semcache.cluster._sizes import MAX_ENTRY_BYTES
from semcache.errors import (
    ClusterError,
    InvalidInputError,
    LimitExceededError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
)

logger = logging.getLogger(__name__)
_U32 = struct.Struct("<I")

BATCH_ITEM_OVERHEAD = 4  # the length prefix of each command in a batch
MAX_IN_FLIGHT = 2  # uncommitted batch entries at once: pipelining without unbounded queues
# Committed batches awaiting the applier before the tick thread waits; it also bounds the drain a snapshot waits for.
MAX_APPLY_BACKLOG = 16
MAX_BACKPRESSURE_WAIT = 0.2  # seconds per tick, far below the 1 s minimum election timeout
READ_BARRIER_TIMEOUT = 2.0  # seconds a new leader may take to apply its log before refusing leader reads
SNAPSHOT_FORMAT = 1
SNAPSHOT_FILE = "raft.snapshot"
# How long the applier waits without a new batch before it runs deferred index inserts.
INDEX_IDLE_SECONDS = 0.05
ROLES = {0: "follower", 1: "candidate", 2: "leader"}
# Batching on, with new entries sent by a tick callback (see the module docstring); needs these private methods.
EAGER_SEND = all(hasattr(SyncObj, f"_SyncObj__{name}") for name in ("sendAppendEntries", "getCurrentLogIndex"))


class _StoredZlib:
    """The ``zlib`` pysyncobj's transport sees: ``compress`` stores (level 0), the rest is zlib's."""

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)

    decompress = staticmethod(zlib.decompress)


def send_raft_messages_uncompressed() -> None:
    """Make pysyncobj's transport in this process send messages without compressing them.

    pysyncobj zlib-compresses every message at level 3.  A put's Raft entry is
    mostly its float32 embedding, which does not compress (a 384-dim put: 1,850
    to 1,570 bytes, for about 40 µs on the sender and 10 µs on each receiver,
    paid once per follower).  Level 0 still writes a zlib stream, so replicas
    running stock pysyncobj read these messages unchanged.
    """
    tcp_connection.zlib = _StoredZlib


class ReplicatedShard(SyncObj):
    """One replica of one shard.

    Args:
        config: the cluster file.
        replica_id: which replica of ``config`` this is.
        clock: milliseconds since the epoch, used only by the leader when it
            issues commands (timestamps, expiry).

    Example (one-replica shard, so it is its own majority)::

        shard = ReplicatedShard(config, "r0")
        shard.wait_leader(5.0)
        shard.submit(Put("k", b"v", "", None, 0, 0))
    """

    def __init__(self, config: ClusterConfig, replica_id: str, *, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.config = config
        self.replica_id = replica_id
        self.shard_id = config.shard_of(replica_id).id
        self._clock = clock
        self._model_id, self._dim = config.embedding_identity()
        self.dim = self._dim
        self._limits = Limits(max_value_bytes=config.max_value_bytes)
        self._lock = threading.RLock()  # guards _state and _members against readers while applying
        self._state = self._new_state()
        self._members: dict[str, Replica] = {
            r.id: r for r in config.shard_of(replica_id).replicas
        }
        self._access = AccessLog()
        self._batch_lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._in_flight: dict[int, float] = {}  # batch id -> when it was sent
        self._batch_seq = 0
        self._apply_queue: queue.SimpleQueue[_Applied | _SnapshotRequest | None] = queue.SimpleQueue()
        self._applier_cond = threading.Condition()
        self._backlog = 0  # batches queued or being applied
        self._queued_batches = 0  # batches ever handed to the applier (FIFO)...
        self._applied_batches = 0  # ...and ever applied: the read barrier compares the two
        self._read_ready_noop: int | None = None  # the election no-op index a leader read barrier passed
        self._wait_budget = MAX_BACKPRESSURE_WAIT  # back-pressure wait left in this tick (seconds)
        self._last_batch_at = 0.0  # when the last batch committed: deferred inserts wait for a pause
        self._applier = threading.Thread(target=self._applier_loop, name="semcache-apply", daemon=True)
        self._applier.start()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.role_changes = 0
        self.snapshots = 0
        self.snapshot_seconds = 0.0  # how long the last snapshot took to write
        self.snapshot_stall_seconds = 0.0  # how long it held up the tick thread
        self.snapshot_pause_seconds = 0.0  # how long it held up the applier (the fork, or the whole write)
        self._snapshot_pending = False
        self._fork_snapshots = hasattr(os, "fork") and config.fork_snapshots
        self._snapshot_child: tuple[int, float] | None = None
        self._snapshot_outcome = SERIALIZER_STATE.NOT_SERIALIZING
        self._data_dir = config.data_dir_of(replica_id)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        me = self._members[replica_id]
        partners = [m.raft for m in self._members.values() if m.id != replica_id]
        conf = SyncObjConf(
            password=config.secret,
            bindAddress=me.raft,
            appendEntriesUseBatch=EAGER_SEND,
            appendEntriesPeriod=config.heartbeat,
            raftMinTimeout=config.election_timeout_min,
            raftMaxTimeout=config.election_timeout_max,
            connectionTimeout=max(3.5, config.election_timeout_max * 1.5),
            connectionRetryTime=0.5,
            leaderFallbackTimeout=config.election_timeout_max * 2,
            journalFile=str(self._data_dir / "raft.journal"),
            fullDumpFile=str(self._data_dir / SNAPSHOT_FILE),
            serializer=self._serialize,
            serializeChecker=self._snapshot_state,
            deserializer=self._deserialize,
            logCompactionMinEntries=config.compaction_entries,
            logCompactionMinTime=config.compaction_seconds,
            dynamicMembershipChange=True,
            commandsWaitLeader=False,
            onStateChanged=self._on_state_changed,
        )
        send_raft_messages_uncompressed()
        super().__init__(me.raft, partners, conf)
        # Wakes the tick thread when a write is queued (pysyncobj only has its own in unbatched mode).
        self._wakeup = PipeNotifier(self._poller) if EAGER_SEND else getattr(self, "_SyncObj__pipeNotifier", None)
        self._sent_through = 0  # the last log index _send_new_entries sent
        self.addOnTickCallback(self._on_tick)
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="semcache-maint", daemon=True)
        self._maintenance.start()

    def _new_state(self) -> ShardState:
        return ShardState(
            self._dim, self._model_id, self.config.index_settings(), self._limits,
            index_backlog=self.config.index_backlog,
        )

    # ------------------------------------------------------------ replicated
    # pysyncobj applies committed entries in its tick thread, the thread that also
    # answers the leader.  An HNSW insert takes ~0.7 ms (384 dims), so applying
    # there would delay every follower's acknowledgement of the next entry by the
    # apply of the previous one.  So inserts are deferred (ShardState's index
    # backlog) and run by an applier thread in idle moments; a batch of puts and
    # deletes then applies in microseconds, and the tick thread applies it itself
    # when nothing is queued before it.  Anything else (expiry scans, evictions,
    # clears, a full backlog) goes to the applier thread, which applies batches
    # in log order.  A writer is acknowledged once its batch is applied here, and
    # a snapshot request queues behind the batches before it, so both see exactly
    # the state at their index.
    @replicated
    def apply_batch(self, data: bytes) -> _Applied:
        """Queue a committed batch of encoded commands for the applier thread (every replica, in log order).

        Never raises: an exception here would wedge pysyncobj's apply loop.
        """
        try:
            record = _Applied([decode_command(item) for item in unpack_batch(data)])
        except Exception as exc:  # noqa: BLE001 - see above
            logger.exception("replica %s could not decode a batch", self.replica_id)
            record = _Applied([], [f"error: {exc}"])
            record.done.set()
            return record
        self._last_batch_at = time.monotonic()
        with self._applier_cond:
            # Back-pressure: a slow applier slows the log instead of growing the queue,
            # but never stalls the tick thread (heartbeats, votes) more than
            # MAX_BACKPRESSURE_WAIT per tick, or this replica would start elections.
            while self._backlog >= MAX_APPLY_BACKLOG and self._wait_budget > 0 and not self._stopping.is_set():
                started = time.monotonic()
                self._applier_cond.wait(min(self._wait_budget, 0.05))
                self._wait_budget -= time.monotonic() - started
            self._backlog += 1
            self._queued_batches += 1
            # Nothing queued before it and nothing expensive in it: apply it here and
            # spare the writer a thread hand-off.  Order holds, since the tick thread
            # is the only one that queues, and the applier is idle (backlog was 0).
            inline = self._backlog == 1 and self._cheap(record.commands)
        if inline:
            self._apply_record(record)
        else:
            self._apply_queue.put(record)
        return record

    def _cheap(self, commands: list[Command]) -> bool:
        """Whether applying ``commands`` costs microseconds: puts and deletes whose inserts the backlog can defer."""
        room = self.config.index_backlog - self._state.queued_index_ops
        return len(commands) < room and all(isinstance(c, Put | Delete) for c in commands)

    def _next_record(self) -> _Applied | _SnapshotRequest | None:
        """The next queued batch; once no batch has committed for INDEX_IDLE_SECONDS, run deferred inserts.

        Batches always go first: they are what writers wait for.  Deferred
        hnswlib inserts run one at a time (each holds the state lock for about a
        millisecond, the wait a reader had when every put inserted at once),
        only after a pause in the writes, so a burst of writes is acknowledged
        at commit speed and indexed afterwards; a backlog past the configured
        bound is indexed by the writes themselves.  The wait is a poll because
        batches the tick thread applies itself queue inserts without waking us.
        """
        while True:
            quiet = time.monotonic() - self._last_batch_at
            try:
                if not self._state.queued_index_ops:
                    return self._apply_queue.get(timeout=INDEX_IDLE_SECONDS)
                if quiet < INDEX_IDLE_SECONDS:
                    return self._apply_queue.get(timeout=INDEX_IDLE_SECONDS - quiet)
                return self._apply_queue.get_nowait()
            except queue.Empty:
                if self._state.queued_index_ops and time.monotonic() - self._last_batch_at >= INDEX_IDLE_SECONDS:
                    with self._lock:
                        self._state.index_pending(1)

    def _applier_loop(self) -> None:
        while True:
            record = self._next_record()
            if record is None:
                return
            if isinstance(record, _SnapshotRequest):
                self._take_snapshot(record.raft_data)
                with self._applier_cond:
                    self._backlog -= 1
                    self._applier_cond.notify_all()
                continue
            self._apply_record(record)

    def _apply_record(self, record: _Applied) -> None:
        """Apply a committed batch (applier thread, or the tick thread when it is cheap and first in line)."""
        for command in record.commands:  # the lock per command: readers wait one insert, not a batch
            try:
                with self._lock:
                    record.results.append(int(self._state.apply(command)))
            except Exception as exc:  # noqa: BLE001 - validated before logging; never expected
                logger.exception("replica %s could not apply a command", self.replica_id)
                record.results.append(f"error: {exc}")
        record.done.set()
        with self._applier_cond:
            self._backlog -= 1
            self._applied_batches += 1
            self._applier_cond.notify_all()

    def wait_applied(self, timeout: float | None = None) -> bool:
        """Block until every committed batch handed to the applier has been applied; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._applier_cond:
            while self._backlog > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._applier_cond.wait(0.1 if left is None else min(left, 0.1))
        return True

    @replicated
    def set_member(self, replica_id: str, raft: str, rpc: str, present: bool) -> bool:
        """Record (or forget) a replica's addresses, so every replica can name the leader's RPC address."""
        with self._lock:
            if present:
                self._members[replica_id] = Replica(replica_id, raft, rpc)
            else:
                self._members.pop(replica_id, None)
        return True

    # ---------------------------------------------------------------- writes
    # Group commit: concurrent writes share Raft entries.  A write joins the
    # pending list; while fewer than MAX_IN_FLIGHT entries await commit, the
    # pending writes go out at once as one entry (up to MAX_ENTRY_BYTES).  A lone
    # writer therefore pays no batching delay, and under load each entry's fixed
    # cost (pickle, encryption, journal, one message per follower) is shared.
    def submit(self, command: Command, timeout: float | None = None) -> int:
        """Commit ``command`` on a majority and apply it here; return its result.

        Raises:
            InvalidInputError, LimitExceededError, EmbeddingMismatchError: the
                command is invalid; nothing was logged.
            NotLeaderError: this replica is not the leader (``leader_hint`` names it),
                or leadership changed before the command committed (it did not apply).
            NoQuorumError: no commit within ``timeout``; the command may still commit later.
        """
        (outcome,) = self.submit_many([command], timeout)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit_many(self, commands: Sequence[Command], timeout: float | None = None) -> list[int | SemcacheError]:
        """Commit ``commands`` together (they share batch entries) and return each one's result or error.

        An invalid command gets its validation error and is not logged; the
        others still are.  Errors that concern the whole shard come back for
        every command: a write that timed out (NoQuorumError) may still commit.

        Raises:
            NotLeaderError: this replica is not the leader (nothing was logged).
        """
        outcomes: list[int | SemcacheError] = []
        pending: list[_Pending | None] = []
        for command in commands:
            try:
                self._state.validate(command)
                data = encode_command(command)
                if len(data) + BATCH_ITEM_OVERHEAD > MAX_ENTRY_BYTES:
                    raise LimitExceededError("encoded command", len(data), MAX_ENTRY_BYTES - BATCH_ITEM_OVERHEAD)
            except SemcacheError as exc:
                outcomes.append(exc)
                pending.append(None)
                continue
            outcomes.append(0)
            pending.append(_Pending(data))
        if not any(pending):
            return outcomes
        self.require_leader()
        with self._batch_lock:
            self._pending.extend(item for item in pending if item is not None)
        self._issue_batches()
        deadline = time.monotonic() + (timeout or self.config.commit_timeout)
        for position, (command, item) in enumerate(zip(commands, pending, strict=True)):
            if item is not None:
                outcomes[position] = self._outcome(command, item, deadline)
        return outcomes

    def _outcome(self, command: Command, pending: _Pending, deadline: float) -> int | SemcacheError:
        """Wait for one submitted command to commit and apply; its result, or the error to report."""
        if not pending.done.wait(max(0.0, deadline - time.monotonic())):
            pending.abandoned = True  # not sent yet? then never: fewer "may have happened" writes
            return self._map_failure("Timeout")
        if pending.error is not None:
            return self._map_failure(pending.error)
        record = pending.record
        if record is None or not record.done.wait(max(0.0, deadline - time.monotonic())):
            return self._map_failure("Timeout")
        result = record.results[pending.position] if pending.position < len(record.results) else "missing result"
        if isinstance(result, str):
            return ClusterError(f"shard {self.shard_id} failed to apply a committed command: {result}")
        if isinstance(command, Put):
            self._access.touch(command.key, command.created_at_ms)
            if self.config.capacity is not None and len(self._state.entries) > self.config.capacity:
                self._wake.set()
        return result

    def _issue_batches(self) -> None:
        """Send pending writes as batch entries while fewer than MAX_IN_FLIGHT are uncommitted."""
        while True:
            with self._batch_lock:
                now = time.monotonic()
                # An entry that never committed (no quorum) must not block the pipe forever;
                # its writers already gave up with NoQuorumError.
                self._in_flight = {k: t for k, t in self._in_flight.items() if now - t < self.config.commit_timeout}
                if not self._pending or len(self._in_flight) >= MAX_IN_FLIGHT:
                    return
                batch, size = [], 4
                while self._pending and size + len(self._pending[0].data) + BATCH_ITEM_OVERHEAD <= MAX_ENTRY_BYTES:
                    item = self._pending.popleft()
                    if not item.abandoned:
                        batch.append(item)
                        size += len(item.data) + BATCH_ITEM_OVERHEAD
                if not batch:
                    continue
                self._batch_seq += 1
                batch_id = self._batch_seq
                self._in_flight[batch_id] = now
            self.apply_batch(pack_batch([item.data for item in batch]),
                             callback=functools.partial(self._batch_done, batch_id, batch))
            if EAGER_SEND and self._wakeup is not None:  # batching mode: pysyncobj queues it without a wake-up
                self._wakeup.notify()

    def _batch_done(self, batch_id: int, batch: list[_Pending], results: Any, error: Any) -> None:
        """pysyncobj callback (tick thread): the batch entry was applied here, or failed."""
        with self._batch_lock:
            self._in_flight.pop(batch_id, None)
        for position, item in enumerate(batch):
            if error != FAIL_REASON.SUCCESS:
                item.error = error
            else:
                item.record, item.position = results, position
            item.done.set()
        self._issue_batches()

    def _on_tick(self) -> None:
        """pysyncobj tick callback (it runs after the tick appended queued writes to the log)."""
        self._wait_budget = MAX_BACKPRESSURE_WAIT
        if EAGER_SEND:
            self._send_new_entries()
        self._nudge_lone_leader()

    def _send_new_entries(self) -> None:
        """Leader: send entries appended since the last call now, not at the next heartbeat."""
        if self._isLeader():
            last = self._SyncObj__getCurrentLogIndex()
            if last > self._sent_through:
                self._sent_through = last
                self._SyncObj__sendAppendEntries()

    def _nudge_lone_leader(self) -> None:
        """Tick callback: wake the next tick at once when a one-replica group has entries to commit.

        A lone leader commits an entry at the tick after it appends it; with no
        follower to answer, that tick would otherwise wait out autoTickPeriod (50 ms).
        """
        if self._in_flight and not self.otherNodes and self._wakeup is not None:
            self._wakeup.notify()

    def _map_failure(self, code: object) -> ClusterError:
        hint = self.leader_rpc()
        if code == "Timeout":
            return NoQuorumError(
                f"shard {self.shard_id}: the write did not commit within the timeout (it may still commit)",
                shard_id=self.shard_id,
            )
        if code in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.LEADER_CHANGED,
                    FAIL_REASON.DISCARDED):
            return NotLeaderError(
                f"shard {self.shard_id}: leadership changed before the write committed",
                shard_id=self.shard_id,
                leader_hint=hint,
            )
        return NoQuorumError(f"shard {self.shard_id}: write failed (pysyncobj reason {code})", shard_id=self.shard_id)

    def require_leader(self, *, for_read: bool = False) -> None:
        """Raise :class:`NotLeaderError` (with the leader's RPC address) unless this replica leads.

        With ``for_read``, also pass the read barrier (:meth:`_read_barrier`).
        """
        if not self._isLeader():
            raise NotLeaderError(
                f"replica {self.replica_id} of {self.shard_id} is not the leader",
                shard_id=self.shard_id,
                leader_hint=self.leader_rpc(),
            )
        if for_read:
            self._read_barrier()

    def _read_barrier(self) -> None:
        """Wait until this leader has applied every entry committed before its election.

        pysyncobj has no read index: a newly elected leader holds every committed
        entry but may not have applied them yet (after a whole-cluster restart it
        replays the journal), so a leader read could miss acknowledged writes.
        pysyncobj appends a no-op entry on election; once that entry and every
        batch queued before it are applied here, leader reads are current.  The
        check is paid once per term.  Past READ_BARRIER_TIMEOUT the read is
        refused with a retryable NotLeaderError that names this replica again.
        """
        noop = getattr(self, "_SyncObj__noopIDx", None)  # set by pysyncobj on election
        if noop is None or noop == self._read_ready_noop:
            return
        deadline = time.monotonic() + READ_BARRIER_TIMEOUT
        while self.raftLastApplied < noop:
            if time.monotonic() > deadline:
                raise self._catching_up()
            time.sleep(0.002)
        with self._applier_cond:
            target = self._queued_batches
            while self._applied_batches < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._catching_up()
                self._applier_cond.wait(min(left, 0.05))
        self._read_ready_noop = noop

    def _catching_up(self) -> NotLeaderError:
        return NotLeaderError(
            f"replica {self.replica_id} leads {self.shard_id} but is still applying its log; retry",
            shard_id=self.shard_id,
            leader_hint=self.leader_rpc(),
        )

    def is_leader(self) -> bool:
        return bool(self._isLeader())

    def leader_rpc(self) -> str | None:
        """RPC address of the replica this one believes leads, or None."""
        leader = self._getLeader()
        if leader is None:
            return None
        with self._lock:
            for member in self._members.values():
                if member.raft == leader.id:
                    return member.rpc
        return None

    def wait_leader(self, timeout: float) -> bool:
        """Wait until this replica knows a leader; True if it does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._getLeader() is not None:
                return True
            time.sleep(0.05)
        return False

    # ----------------------------------------------------------------- reads
    def read(self, fn: Callable[[ShardState, int], Any], *, touch: str | None = None) -> Any:
        """Run ``fn(state, now_ms)`` under the state lock (reads never see a half-applied command)."""
        now = self._clock()
        with self._lock:
            result = fn(self._state, now)
        if touch is not None:
            self._access.touch(touch, now)
        return result

    def touch(self, key: str) -> None:
        """Record a read of ``key`` for the eviction policy (local, never replicated)."""
        self._access.touch(key, self._clock())

    def now_ms(self) -> int:
        """The clock the leader stamps commands with."""
        return self._clock()

    def digest(self) -> tuple[int, str]:
        """``(commands applied, SHA-256 of the state)``: equal pairs mean identical replicas."""
        with self._lock:
            return self._state.applied, self._state.digest()

    @property
    def members(self) -> dict[str, Replica]:
        with self._lock:
            return dict(self._members)

    # ------------------------------------------------------------ membership
    def add_replica(self, replica_id: str, raft: str, rpc: str, timeout: float | None = None) -> None:
        """Add a replica to this shard (call on the leader); it catches up from the log or a snapshot."""
        self.require_leader()
        if replica_id in self.members:
            raise InvalidInputError(f"replica {replica_id!r} is already a member of {self.shard_id}")
        self._sync(lambda cb: self.set_member(replica_id, raft, rpc, True, callback=cb), timeout)
        self._sync(lambda cb: self.addNodeToCluster(raft, callback=cb), timeout)

    def remove_replica(self, replica_id: str, timeout: float | None = None) -> None:
        """Remove a replica from this shard (call on the leader; a leader cannot remove itself)."""
        self.require_leader()
        member = self.members.get(replica_id)
        if member is None:
            raise InvalidInputError(f"replica {replica_id!r} is not a member of {self.shard_id}")
        if member.id == self.replica_id:
            raise InvalidInputError("the leader cannot remove itself; remove it from another replica once it leads")
        self._sync(lambda cb: self.removeNodeFromCluster(member.raft, callback=cb), timeout)
        self._sync(lambda cb: self.set_member(replica_id, "", "", False, callback=cb), timeout)

    def _sync(self, start: Callable[[Callable[[Any, Any], None]], None], timeout: float | None) -> None:
        done = threading.Event()
        outcome: list[Any] = []

        def callback(result: Any, error: Any) -> None:
            outcome.append(error)
            done.set()

        start(callback)
        if not done.wait(timeout or self.config.commit_timeout):
            raise self._map_failure("Timeout")
        if outcome[0] != FAIL_REASON.SUCCESS:
            raise self._map_failure(outcome[0])

    # ---------------------------------------------------------------- health
    def status(self) -> dict[str, Any]:
        """Role, leader, term, commit and apply positions, entries, and per-replica progress."""
        raw = self._raw_status()
        members = self.members
        leader = raw.get("leader")
        commit = int(raw.get("commit_idx") or 0)
        replicas: dict[str, dict[str, Any]] = {}
        for member in members.values():
            if member.id == self.replica_id:
                replicas[member.id] = {"match_index": int(raw.get("last_applied") or 0), "connected": True, "lag": 0}
                continue
            match = raw.get("match_idx_server_" + member.raft)
            replicas[member.id] = {
                "match_index": match,
                "connected": raw.get("partner_node_status_server_" + member.raft) == 2,
                "lag": None if match is None else max(0, commit - int(match)),
            }
        role = ROLES.get(int(raw.get("state", 0)), "follower")
        with self._lock:
            entries = len(self._state.entries)
            applied_commands = self._state.applied
            index_queue = self._state.queued_index_ops
        return {
            "node": self.replica_id,
            "shard": self.shard_id,
            "role": role,
            "leader": self.leader_rpc(),
            "leader_raft": None if leader is None else str(leader),
            "term": int(raw.get("raft_term") or 0),
            "commit_index": commit,
            "applied": int(raw.get("last_applied") or 0),
            "applied_commands": applied_commands,
            "log_len": int(raw.get("log_len") or 0),
            "entries": entries,
            "index_queue": index_queue,  # hnswlib inserts deferred to idle moments (already searchable)
            "has_quorum": bool(raw.get("has_quorum")),
            "healthy": leader is not None and bool(raw.get("has_quorum")),
            "replicas": replicas,
            "role_changes": self.role_changes,
            "snapshots": self.snapshots,
            "last_snapshot_seconds": round(self.snapshot_seconds, 4),
            "last_snapshot_stall_seconds": round(self.snapshot_stall_seconds, 4),
            "last_snapshot_apply_pause_seconds": round(self.snapshot_pause_seconds, 4),
        }

    def _raw_status(self) -> dict[str, Any]:
        # getStatus() iterates pysyncobj's dicts, which the tick thread may resize meanwhile.
        for _ in range(5):
            try:
                return dict(self.getStatus())
            except RuntimeError:
                time.sleep(0.001)
        return {}

    def _on_state_changed(self, old: int, new: int) -> None:
        self.role_changes += 1
        logger.info("replica %s: %s -> %s", self.replica_id, ROLES.get(old), ROLES.get(new))

    # ----------------------------------------------- expiry and eviction
    def _maintenance_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.config.maintenance_interval)
            self._wake.clear()
            if self._stopping.is_set() or not self._isLeader():
                continue
            try:
                self.expire_now()
                self.evict_over_capacity()
            except (ClusterError, SyncObjException) as exc:
                logger.info("replica %s: maintenance postponed: %s", self.replica_id, exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("replica %s: maintenance failed", self.replica_id)

    def expire_now(self) -> int:
        """Leader only: replicate ``Expire(now)`` if anything has expired; returns entries removed."""
        now = self._clock()
        if not self.read(lambda state, _now: bool(state.expired_keys(now))):
            return 0
        return self.submit(Expire(now))

    def evict_over_capacity(self) -> int:
        """Leader only: evict down to 99 % of capacity, in commands that each fit one Raft entry."""
        capacity = self.config.capacity
        if capacity is None:
            return 0
        target = capacity - capacity // 100

        def victims(state: ShardState, _now: int) -> list[str]:
            excess = len(state.entries) - target
            if len(state.entries) <= capacity or excess <= 0:
                return []
            return choose_victims(self.config.eviction, state.entries, self._access, excess)

        removed = 0
        for chunk in _chunks_under(self.read(victims), MAX_ENTRY_BYTES // 2):
            removed += self.submit(Evict(tuple(chunk)))
            for key in chunk:
                self._access.forget(key)
        return removed

    # ------------------------------------------------------------- snapshots
    # pysyncobj calls the serializer in its tick thread, and a snapshot of a large
    # shard takes long enough (0.3-0.8 s at 12K MiniLM vectors, growing linearly)
    # to delay heartbeats past an election timeout.  So the tick thread only
    # queues a snapshot request behind the committed batches.  The applier thread
    # reaches it once the state is exactly the state at the applied index, and
    # forks: the child writes that copy-on-write image and exits, while the parent
    # applies on.  Without fork the applier writes the snapshot itself (writes
    # wait, heartbeats do not).  The serialize checker tells pysyncobj when the
    # file is complete; only then does it drop the journal entries it covers.
    def _serialize(self, filename: str, raft_data: tuple[Any, Any, Any]) -> None:
        """pysyncobj's serializer hook (tick thread): hand the snapshot to the applier thread."""
        started = time.perf_counter()
        self._snapshot_pending = True
        with self._applier_cond:
            self._backlog += 1
        self._apply_queue.put(_SnapshotRequest(raft_data))
        self.snapshot_stall_seconds = time.perf_counter() - started
        # pysyncobj now renames ``filename`` into place; nothing creates it (the
        # snapshot goes straight to the real file), so that rename fails harmlessly
        # and _snapshot_state tells pysyncobj the outcome.

    def _take_snapshot(self, raft_data: tuple[Any, Any, Any]) -> None:
        """Applier thread, with every earlier batch applied: write the snapshot (in a forked child if possible)."""
        started = time.perf_counter()
        members = self.members  # copied under the lock here: a forked child must never take a lock
        if self._fork_snapshots:
            # Fork with the state lock held, so that no reader is inside hnswlib (and
            # perhaps holding one of its mutexes) when the image is taken: the child
            # indexes any deferred inserts before saving, and those take its mutexes.
            with self._lock:
                pid = os.fork()
            if pid == 0:  # the child: write, then leave without running any of the parent's cleanup
                code = 1
                try:
                    self._write_snapshot(raft_data, members)
                    code = 0
                finally:
                    os._exit(code)
            self._snapshot_child = (pid, started)
        else:
            try:
                self._write_snapshot(raft_data, members)
                self._snapshot_outcome = SERIALIZER_STATE.SUCCESS
                self.snapshots += 1
            except Exception:  # noqa: BLE001 - pysyncobj retries at the next compaction
                logger.exception("replica %s: snapshot failed", self.replica_id)
                self._snapshot_outcome = SERIALIZER_STATE.FAILED
            self.snapshot_seconds = time.perf_counter() - started
        self.snapshot_pause_seconds = time.perf_counter() - started
        self._snapshot_pending = False  # last: the checker reads the outcome after this

    def _snapshot_state(self) -> int:
        """pysyncobj's serialize checker (tick thread): has the last snapshot finished?"""
        if self._snapshot_pending:
            return int(SERIALIZER_STATE.SERIALIZING)
        if self._snapshot_child is not None:
            pid, started = self._snapshot_child
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                return int(SERIALIZER_STATE.SERIALIZING)
            self._snapshot_child = None
            self.snapshot_seconds = time.perf_counter() - started
            if status == 0:
                self.snapshots += 1
                return int(SERIALIZER_STATE.SUCCESS)
            logger.error("replica %s: snapshot child failed with status %s", self.replica_id, status)
            return int(SERIALIZER_STATE.FAILED)
        outcome, self._snapshot_outcome = self._snapshot_outcome, SERIALIZER_STATE.NOT_SERIALIZING
        return int(outcome)

    def _write_snapshot(self, raft_data: tuple[Any, Any, Any], members: dict[str, Replica]) -> None:
        """The state plus Raft metadata as an uncompressed tar, atomically replacing the snapshot file."""
        last, prev, cluster = raft_data
        target = self._data_dir / SNAPSHOT_FILE
        part = target.with_name(target.name + ".part")
        with tempfile.TemporaryDirectory(prefix="snap-", dir=self._data_dir) as tmp:
            root = Path(tmp)
            # Only the tick thread mutates the state, and it is here (or this is its forked copy).
            self._state.snapshot(root / "state")
            meta = {
                "format": SNAPSHOT_FORMAT,
                "last": _entry_to_json(last),
                "prev": _entry_to_json(prev),
                "cluster": sorted(node.id for node in cluster),
                "members": [vars(member) for member in members.values()],
            }
            (root / "raft.json").write_text(json.dumps(meta, sort_keys=True))
            with tarfile.open(part, "w") as tar:
                tar.add(root / "raft.json", arcname="raft.json")
                tar.add(root / "state", arcname="state")
        with open(part, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(part, target)

    def _deserialize(self, filename: str) -> tuple[Any, Any, Any]:
        """pysyncobj's deserializer hook: restore the state; return the Raft metadata."""
        with tempfile.TemporaryDirectory(prefix="restore-", dir=self._data_dir) as tmp:
            root = Path(tmp)
            with tarfile.open(filename, "r") as tar:
                tar.extractall(root, filter="data")
            meta = json.loads((root / "raft.json").read_text())
            if meta.get("format") != SNAPSHOT_FORMAT:
                raise InvalidInputError(f"unknown shard snapshot format {meta.get('format')!r}")
            state = ShardState.restore(root / "state", model_id=self._model_id, dim=self._dim)
        state.limits = self._limits
        state.set_index_backlog(self.config.index_backlog)
        self.wait_applied()  # nothing older may land on the new state
        with self._lock:
            self._state = state
            self._members = {m["id"]: Replica(**m) for m in meta["members"]}
        last, prev = _entry_from_json(meta["last"]), _entry_from_json(meta["prev"])
        self._align_journal(prev, last)
        # We are inside the leader's snapshot message, i.e. we just heard from it:
        # restart the election timer, or a restore longer than the election timeout
        # would make this follower campaign at its next tick and depose a healthy leader.
        self._SyncObj__raftElectionDeadline = time.monotonic() + self.config.election_timeout_max
        return last, prev, [TCPNode(a) for a in meta["cluster"]]

    def _align_journal(self, prev: tuple[bytes, int, int], last: tuple[bytes, int, int]) -> None:
        """Drop journal entries the snapshot covers, so pysyncobj keeps the ones after it.

        The snapshot file is complete before pysyncobj trims its journal.  A node
        that stops in between restarts with a journal that still begins before
        the snapshot; pysyncobj would then discard the whole journal, including
        committed entries newer than the snapshot.  Trimming it to begin at the
        snapshot's last two entries keeps those entries.
        """
        log = getattr(self, "_SyncObj__raftLog", None)  # pysyncobj's journal (not public API)
        if log is None or len(log) < 2 or (log[0] == prev and log[1] == last):
            return
        position = prev[1] - log[0][1]
        if 0 < position < len(log) - 1 and log[position] == prev and log[position + 1] == last:
            log.deleteEntriesTo(position)

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the maintenance loop and pysyncobj's threads; close the journal."""
        self._stopping.set()
        self._wake.set()
        self._maintenance.join(timeout=5)
        self.destroy_synchronous()
        self._apply_queue.put(None)
        self._applier.join(timeout=10)


def pack_batch(items: list[bytes]) -> bytes:
    """Commands for one Raft entry: ``u32 count`` then ``u32 length + bytes`` each.

    >>> unpack_batch(pack_batch([b"a", b"bc"]))
    [b'a', b'bc']
    """
    return b"".join([_U32.pack(len(items))] + [_U32.pack(len(item)) + item for item in items])


def unpack_batch(data: bytes) -> list[bytes]:
    view = memoryview(data)
    (count,) = _U32.unpack_from(view, 0)
    pos, items = 4, []
    for _ in range(count):
        (size,) = _U32.unpack_from(view, pos)
        items.append(bytes(view[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    if pos != len(view):
        raise InvalidInputError("malformed command batch")
    return items


@dataclass
class _Pending:
    """One write waiting for its batch to commit (``done``), then to be applied (``record.done``)."""

    data: bytes
    done: threading.Event = field(default_factory=threading.Event)
    record: _Applied | None = None
    position: int = 0
    error: Any = None
    abandoned: bool = False  # its writer timed out before it was sent


@dataclass
class _SnapshotRequest:
    """Queued behind the committed batches: snapshot the state once they are applied."""

    raft_data: tuple[Any, Any, Any]


@dataclass
class _Applied:
    """A committed batch on its way through the applier thread."""

    commands: list[Command]
    results: list[int | str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _entry_to_json(entry: tuple[bytes, int, int]) -> list[Any]:
    command, index, term = entry
    return [bytes(command).hex(), int(index), int(term)]


def _entry_from_json(data: list[Any]) -> tuple[bytes, int, int]:
    return bytes.fromhex(data[0]), int(data[1]), int(data[2])


def _chunks_under(keys: list[str], budget: int) -> list[list[str]]:
    """Split ``keys`` into lists whose encoded size stays under ``budget`` bytes."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for key in keys:
        cost = len(key.encode("utf-8", "surrogatepass")) + 4
        if current and size + cost > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(key)
        size += cost
    if current:
        chunks.append(current)
    return chunks
