"""Group commit: writes waiting to be committed, sent as shared Raft entries.

Concurrent writes share Raft entries.  A write joins the pending list; while
fewer than :data:`MAX_IN_FLIGHT` entries await commit, the pending writes go
out at once as one entry (up to :data:`~semcache.cluster._sizes.MAX_ENTRY_BYTES`,
since one entry of 64 KiB or more takes pysyncobj's broken chunked path).  Sizes
are counted as the entry will hold them (:func:`entry_size`): pysyncobj pickles
the call with protocol 2, which stores ``bytes`` as latin-1 text in UTF-8, so
every byte from 0x80 up takes two (binary values, non-ASCII text, vectors).  A
lone writer therefore pays no batching delay, and under load each entry's
fixed cost (pickle, encryption, journal, one message per follower) is shared.

New entries go to the followers in the tick that appends them (a sync write
never waits for the 0.1 s heartbeat), but the commit index does not get
messages of its own: followers learn it from the next append or heartbeat.
Stock pysyncobj offers either batching (``appendEntriesUseBatch=True``:
writes wait for the heartbeat) or not (every commit then costs two more
messages per follower, and their answers, which on a loaded 2-core machine
took CPU from the writer being acknowledged).  So batching is on and the tick
callback (:meth:`GroupCommit.on_tick`) sends what the tick appended; with a
pysyncobj lacking the private methods this needs (:data:`.compat.EAGER_SEND`),
the stock unbatched mode is used instead.
"""

from __future__ import annotations

import functools
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semcache._engine.commands import Command, encode_command
from semcache.cluster._raft.compat import (
    EAGER_SEND,
    FAIL_REASON,
    current_log_index,
    is_leader,
    send_append_entries,
    tick_wakeup,
)
from semcache.cluster._sizes import MAX_ENTRY_BYTES
from semcache.errors import ClusterError, InvalidInputError, LimitExceededError, NoQuorumError, NotLeaderError

if TYPE_CHECKING:
    from semcache.cluster._raft.applier import AppliedBatch
    from semcache.cluster._raft.replica import ReplicatedShard

_U32 = struct.Struct("<I")
# The length prefix of each command in a batch, as pickled: 4 bytes, each of which may be >= 0x80.
BATCH_ITEM_OVERHEAD = 2 * _U32.size
_HIGH_BYTES = bytes(range(0x80, 0x100))
# The largest command (by entry_size) an entry holds alone: the batch count and its own length prefix beside it.
MAX_COMMAND_SIZE = MAX_ENTRY_BYTES - 2 * BATCH_ITEM_OVERHEAD
MAX_IN_FLIGHT = 2  # uncommitted batch entries at once: pipelining without unbounded queues
TIMEOUT = "Timeout"  # the failure code of a write that did not commit in time


def pack_batch(items: list[bytes]) -> bytes:
    """Commands for one Raft entry: ``u32 count`` then ``u32 length + bytes`` each.

    >>> unpack_batch(pack_batch([b"a", b"bc"]))
    [b'a', b'bc']
    """
    return b"".join([_U32.pack(len(items))] + [_U32.pack(len(item)) + item for item in items])


def unpack_batch(data: bytes) -> list[bytes]:
    """The commands of one Raft entry made by :func:`pack_batch`.

    Raises:
        InvalidInputError: trailing bytes after the last command.
    """
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


def entry_size(data: bytes) -> int:
    """How many bytes ``data`` takes in a Raft entry: pysyncobj's pickle (protocol 2) doubles bytes >= 0x80.

    >>> entry_size(b"abc"), entry_size(bytes([0x80, 0xFF, 0x41]))
    (3, 5)
    """
    return 2 * len(data) - len(data.translate(None, _HIGH_BYTES))


def encode_for_entry(command: Command) -> bytes:
    """``command`` encoded for a batch entry.

    Raises:
        LimitExceededError: it would not fit one Raft entry on its own (as pickled
            into the entry: a binary value can take up to twice its size).
    """
    data = encode_command(command)
    size = entry_size(data)
    if size > MAX_COMMAND_SIZE:
        raise LimitExceededError("command as stored in a Raft entry", size, MAX_COMMAND_SIZE)
    return data


def map_failure(code: object, shard_id: str, leader_hint: str | None) -> ClusterError:
    """The error for a write pysyncobj failed with ``code`` (a ``FAIL_REASON``, or :data:`TIMEOUT`)."""
    if code == TIMEOUT:
        return NoQuorumError(
            f"shard {shard_id}: the write did not commit within the timeout (it may still commit)",
            shard_id=shard_id,
        )
    if code in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.LEADER_CHANGED,
                FAIL_REASON.DISCARDED):
        return NotLeaderError(
            f"shard {shard_id}: leadership changed before the write committed",
            shard_id=shard_id,
            leader_hint=leader_hint,
        )
    return NoQuorumError(f"shard {shard_id}: write failed (pysyncobj reason {code})", shard_id=shard_id)


@dataclass
class _Pending:
    """One write waiting for its batch to commit (``done``), then to be applied (``record.done``)."""

    data: bytes
    size: int  # entry_size(data)
    done: threading.Event = field(default_factory=threading.Event)
    record: AppliedBatch | None = None
    position: int = 0
    error: Any = None
    abandoned: bool = False  # its writer timed out before it was sent


class GroupCommit:
    """The writes a leader has yet to commit: batching them into entries, and each writer's outcome.

    Args:
        shard: the replica; entries are appended through its ``@replicated`` ``apply_batch``.
        commit_timeout: seconds a write may wait to commit (and an entry may stay in flight).
        leader_rpc: the leader's RPC address as this replica knows it (the hint in NotLeaderError).
    """

    def __init__(self, shard: ReplicatedShard, *, commit_timeout: float,
                 leader_rpc: Callable[[], str | None]) -> None:
        self._shard = shard
        self._commit_timeout = commit_timeout
        self._leader_rpc = leader_rpc
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._in_flight: dict[int, float] = {}  # batch id -> when it was sent
        self._batch_seq = 0
        # Wakes the tick thread when a write is queued (pysyncobj only has its own in unbatched mode).
        self._wakeup = tick_wakeup(shard)
        self._sent_through = 0  # the last log index _send_new_entries sent

    def commit(self, items: list[bytes | None], timeout: float | None = None) -> list[int | ClusterError | None]:
        """Commit the encoded commands in ``items`` and wait for each to apply here.

        Returns, per item, its result, the error to report for it, or None where
        the item was None.  A write that timed out (NoQuorumError) may still commit.
        """
        pending = [None if data is None else _Pending(data, entry_size(data)) for data in items]
        with self._lock:
            self._pending.extend(item for item in pending if item is not None)
        self._issue_batches()
        deadline = time.monotonic() + (timeout or self._commit_timeout)
        return [None if item is None else self._outcome(item, deadline) for item in pending]

    def failure(self, code: object) -> ClusterError:
        """:func:`map_failure` for this shard, with the leader this replica knows as the hint."""
        return map_failure(code, self._shard.shard_id, self._leader_rpc())

    def _outcome(self, pending: _Pending, deadline: float) -> int | ClusterError:
        """Wait for one submitted command to commit and apply; its result, or the error to report."""
        if not pending.done.wait(max(0.0, deadline - time.monotonic())):
            pending.abandoned = True  # not sent yet? then never: fewer "may have happened" writes
            return self.failure(TIMEOUT)
        if pending.error is not None:
            return self.failure(pending.error)
        record = pending.record
        if record is None or not record.done.wait(max(0.0, deadline - time.monotonic())):
            return self.failure(TIMEOUT)
        result = record.results[pending.position] if pending.position < len(record.results) else "missing result"
        if isinstance(result, str):
            return ClusterError(f"shard {self._shard.shard_id} failed to apply a committed command: {result}")
        return result

    def _issue_batches(self) -> None:
        """Send pending writes as batch entries while fewer than MAX_IN_FLIGHT are uncommitted."""
        while True:
            with self._lock:
                now = time.monotonic()
                # An entry that never committed (no quorum) must not block the pipe forever;
                # its writers already gave up with NoQuorumError.
                self._in_flight = {k: t for k, t in self._in_flight.items() if now - t < self._commit_timeout}
                if not self._pending or len(self._in_flight) >= MAX_IN_FLIGHT:
                    return
                batch = self._take_batch()
                if not batch:
                    continue
                self._batch_seq += 1
                batch_id = self._batch_seq
                self._in_flight[batch_id] = now
            self._shard.apply_batch(pack_batch([item.data for item in batch]),
                                    callback=functools.partial(self._batch_done, batch_id, batch))
            if EAGER_SEND and self._wakeup is not None:  # batching mode: pysyncobj queues it without a wake-up
                self._wakeup.notify()

    def _take_batch(self) -> list[_Pending]:
        """Pending writes (under the lock) for one entry of at most MAX_ENTRY_BYTES; abandoned ones are dropped."""
        batch, size = [], BATCH_ITEM_OVERHEAD  # the count, then each command with its length
        while self._pending and size + self._pending[0].size + BATCH_ITEM_OVERHEAD <= MAX_ENTRY_BYTES:
            item = self._pending.popleft()
            if not item.abandoned:
                batch.append(item)
                size += item.size + BATCH_ITEM_OVERHEAD
        return batch

    def _batch_done(self, batch_id: int, batch: list[_Pending], results: Any, error: Any) -> None:
        """pysyncobj callback (tick thread): the batch entry was applied here, or failed."""
        with self._lock:
            self._in_flight.pop(batch_id, None)
        for position, item in enumerate(batch):
            if error != FAIL_REASON.SUCCESS:
                item.error = error
            else:
                item.record, item.position = results, position
            item.done.set()
        self._issue_batches()

    # ------------------------------------------------------- tick callback
    def on_tick(self) -> None:
        """pysyncobj tick callback (it runs after the tick appended queued writes to the log)."""
        if EAGER_SEND:
            self._send_new_entries()
        self._nudge_lone_leader()

    def _send_new_entries(self) -> None:
        """Leader: send entries appended since the last call now, not at the next heartbeat."""
        if is_leader(self._shard):
            last = current_log_index(self._shard)
            if last > self._sent_through:
                self._sent_through = last
                send_append_entries(self._shard)

    def _nudge_lone_leader(self) -> None:
        """Wake the next tick at once when a one-replica group has entries to commit.

        A lone leader commits an entry at the tick after it appends it; with no
        follower to answer, that tick would otherwise wait out autoTickPeriod (50 ms).
        """
        if self._in_flight and not self._shard.otherNodes and self._wakeup is not None:
            self._wakeup.notify()
