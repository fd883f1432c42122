"""Applying committed Raft entries to the shard state, in log order, off pysyncobj's tick thread.

pysyncobj applies committed entries in its tick thread, the thread that also
answers the leader.  An HNSW insert takes ~0.7 ms (384 dims), so applying
there would delay every follower's acknowledgement of the next entry by the
apply of the previous one.  So inserts are deferred (ShardState's index
backlog) and run by the applier thread in idle moments; a batch of puts and
deletes then applies in microseconds, and the tick thread applies it itself
when nothing is queued before it.  Anything else (expiry scans, evictions,
clears, a full backlog) goes to the applier thread, which applies batches in
log order.  A writer is acknowledged once its batch is applied here, and a
snapshot queues behind the batches before it (:meth:`Applier.run_in_order`),
so both see exactly the state at their index.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from semcache._engine.commands import Command, Delete, Put, decode_command
from semcache._engine.state import ShardState
from semcache.cluster._raft.group_commit import unpack_batch

logger = logging.getLogger(__name__)

# Committed batches awaiting the applier before the tick thread waits; it also bounds the drain a snapshot waits for.
MAX_APPLY_BACKLOG = 16
MAX_BACKPRESSURE_WAIT = 0.2  # seconds per tick, far below the 1 s minimum election timeout
# How long the applier waits without a new batch before it runs deferred index inserts.
INDEX_IDLE_SECONDS = 0.05


class GuardedState:
    """The replica's :class:`ShardState` and the lock readers and the applier share.

    The lock is held per command applied, so a reader waits one insert, never a
    batch; a snapshot restore swaps ``state`` under it.
    """

    def __init__(self, state: ShardState) -> None:
        self.lock = threading.RLock()
        self.state = state


@dataclass
class AppliedBatch:
    """A committed batch on its way through the applier: its commands, then one result each, then ``done``."""

    commands: list[Command]
    results: list[int | str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Task:
    """Work queued behind the committed batches (a snapshot): it runs once they are applied."""

    run: Callable[[], None]


class Applier:
    """The applier thread, its queue and back-pressure, and the counters the read barrier compares.

    Args:
        guarded: the state to apply to.
        index_backlog: deferred hnswlib inserts a replica may hold (the config's ``index_backlog``).
        replica_id: for log messages.
        stopping: set when the replica closes: back-pressure stops waiting.
    """

    def __init__(self, guarded: GuardedState, *, index_backlog: int, replica_id: str,
                 stopping: threading.Event) -> None:
        self._guarded = guarded
        self._index_backlog = index_backlog
        self._replica_id = replica_id
        self._stopping = stopping
        self._queue: queue.SimpleQueue[AppliedBatch | _Task | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._backlog = 0  # batches and tasks queued or being applied
        self._queued_batches = 0  # batches ever handed to the applier (FIFO)...
        self._applied_batches = 0  # ...and ever applied: the read barrier compares the two
        self._wait_budget = MAX_BACKPRESSURE_WAIT  # back-pressure wait left in this tick (seconds)
        self._last_batch_at = 0.0  # when the last batch committed: deferred inserts wait for a pause
        self._thread = threading.Thread(target=self._loop, name="semcache-apply", daemon=True)
        self._thread.start()

    # ------------------------------------------------------- the tick thread
    def apply_entry(self, data: bytes) -> AppliedBatch:
        """Decode a committed batch entry and apply it, here if cheap and first in line, else on the applier thread.

        Never raises: it runs inside pysyncobj's apply loop, which an exception would wedge.
        """
        try:
            record = AppliedBatch([decode_command(item) for item in unpack_batch(data)])
        except Exception as exc:  # noqa: BLE001 - see above
            logger.exception("replica %s could not decode a batch", self._replica_id)
            record = AppliedBatch([], [f"error: {exc}"])
            record.done.set()
            return record
        self._last_batch_at = time.monotonic()
        with self._cond:
            # Back-pressure: a slow applier slows the log instead of growing the queue,
            # but never stalls the tick thread (heartbeats, votes) more than
            # MAX_BACKPRESSURE_WAIT per tick, or this replica would start elections.
            while self._backlog >= MAX_APPLY_BACKLOG and self._wait_budget > 0 and not self._stopping.is_set():
                started = time.monotonic()
                self._cond.wait(min(self._wait_budget, 0.05))
                self._wait_budget -= time.monotonic() - started
            self._backlog += 1
            self._queued_batches += 1
            # Nothing queued before it and nothing expensive in it: apply it here and
            # spare the writer a thread hand-off.  Order holds, since the tick thread
            # is the only one that queues, and the applier is idle (backlog was 0).
            inline = self._backlog == 1 and self._cheap(record.commands)
        if inline:
            self._apply(record)
        else:
            self._queue.put(record)
        return record

    def new_tick(self) -> None:
        """A new pysyncobj tick began: back-pressure may wait again."""
        self._wait_budget = MAX_BACKPRESSURE_WAIT

    def run_in_order(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the applier thread once every batch queued before it is applied."""
        with self._cond:
            self._backlog += 1
        self._queue.put(_Task(task))

    def _cheap(self, commands: list[Command]) -> bool:
        """Whether applying ``commands`` costs microseconds: puts and deletes whose inserts the backlog can defer."""
        room = self._index_backlog - self._guarded.state.queued_index_ops
        return len(commands) < room and all(isinstance(c, Put | Delete) for c in commands)

    # ----------------------------------------------------- waiting for it
    def wait_applied(self, timeout: float | None = None) -> bool:
        """Block until every committed batch handed to the applier has been applied; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._backlog > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.1 if left is None else min(left, 0.1))
        return True

    def wait_queued_applied(self, deadline: float) -> bool:
        """Wait (until the ``time.monotonic()`` ``deadline``) for every batch queued so far to be applied."""
        with self._cond:
            target = self._queued_batches
            while self._applied_batches < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the applier thread once it has applied what is queued."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    # ----------------------------------------------------- the applier thread
    def _loop(self) -> None:
        while True:
            record = self._next_record()
            if record is None:
                return
            if isinstance(record, _Task):
                record.run()
                with self._cond:
                    self._backlog -= 1
                    self._cond.notify_all()
                continue
            self._apply(record)

    def _next_record(self) -> AppliedBatch | _Task | None:
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
                if not self._guarded.state.queued_index_ops:
                    return self._queue.get(timeout=INDEX_IDLE_SECONDS)
                if quiet < INDEX_IDLE_SECONDS:
                    return self._queue.get(timeout=INDEX_IDLE_SECONDS - quiet)
                return self._queue.get_nowait()
            except queue.Empty:
                state = self._guarded.state
                if state.queued_index_ops and time.monotonic() - self._last_batch_at >= INDEX_IDLE_SECONDS:
                    with self._guarded.lock:
                        self._guarded.state.index_pending(1)

    def _apply(self, record: AppliedBatch) -> None:
        """Apply a committed batch (applier thread, or the tick thread when it is cheap and first in line)."""
        for command in record.commands:  # the lock per command: readers wait one insert, not a batch
            try:
                with self._guarded.lock:
                    record.results.append(int(self._guarded.state.apply(command)))
            except Exception as exc:  # noqa: BLE001 - validated before logging; never expected
                logger.exception("replica %s could not apply a command", self._replica_id)
                record.results.append(f"error: {exc}")
        record.done.set()
        with self._cond:
            self._backlog -= 1
            self._applied_batches += 1
            self._cond.notify_all()
