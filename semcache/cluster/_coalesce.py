"""Request coalescing: concurrent requests to one shard share one RPC.

A request to a node costs a Flight call: a gRPC round trip, and on the node a
handler thread (gRPC's sync server starts and stops threads as concurrent
calls come and go).  A write also costs a share of a Raft entry (pickled,
encrypted, sent to every follower, acknowledged).  When many threads call one
shard at once, :class:`Combiner` lets them share those costs: at most ``depth``
requests to the shard are in flight; a caller that finds a free slot sends at
once (so a lone caller waits for nothing), and callers that arrive while the
slots are taken queue up.  When a request finishes, its slot passes to the
first queued caller, which sends everything queued by then (up to
``max_items`` and ``max_bytes``) as one request.  No thread of its own: the
callers send for each other.  The client uses one for puts and one for
searches per shard.

>>> sent = []
>>> combiner = Combiner(lambda batch: sent.append(batch) or [x.upper() for x in batch], size=len)
>>> combiner.submit("a"), combiner.submit("bb")
('A', 'BB')
>>> sent
[['a'], ['bb']]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from semcache.cluster._sizes import BATCH_MAX_BYTES
from semcache.errors import ClusterError

T = TypeVar("T")
R = TypeVar("R")
Q = TypeVar("Q")

DEFAULT_DEPTH = 1  # one request in flight per shard: the others queue and share the next (measured best)
DEFAULT_MAX_ITEMS = 64
DEFAULT_MAX_BYTES = BATCH_MAX_BYTES  # so a request fits one Raft entry with room for the encoding


def take_batch(queue: deque[Q], size: Callable[[Q], int], max_items: int = DEFAULT_MAX_ITEMS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> list[Q]:
    """Pop one batch off the front of ``queue``: at least one item if any, then as many as fit the bounds.

    >>> queue = deque(["aa", "bb", "cc"])
    >>> take_batch(queue, len, max_bytes=4), list(queue)
    (['aa', 'bb'], ['cc'])
    """
    batch: list[Q] = []
    total = 0
    while queue and len(batch) < max_items:
        item_size = size(queue[0])
        if batch and total + item_size > max_bytes:
            break
        batch.append(queue.popleft())
        total += item_size
    return batch


@dataclass(eq=False)
class _Caller(Generic[T]):
    """A caller waiting for its item's outcome, or for its turn to send."""

    item: T
    wake: threading.Event = field(default_factory=threading.Event)
    sender: bool = False  # holds a send slot it has not used yet
    done: bool = False
    outcome: object = None  # the item's result, or the exception to raise


class Combiner(Generic[T, R]):
    """Sends items through ``send`` in batches, as many per batch as were waiting.

    Args:
        send: sends a batch; returns one outcome per item, in order (a result,
            or an exception for that item alone), or raises an error that then
            applies to every item of the batch.
        size: an item's size in bytes, for ``max_bytes``.
        depth: batches in flight at once.
        max_items, max_bytes: bounds of one batch (a single item may exceed ``max_bytes``).
        fails_queued: when a batch raises an error for which this is true (the
            shard did not answer in time), the callers queued behind it get the
            same error instead of waiting out another timeout.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        size: Callable[[T], int],
        depth: int = DEFAULT_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fails_queued: Callable[[BaseException], bool] = lambda error: False,
    ) -> None:
        if depth < 1 or max_items < 1:
            raise ValueError("depth and max_items must be >= 1")
        self._send = send
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._fails_queued = fails_queued
        self._lock = threading.Lock()
        self._queue: deque[_Caller[T]] = deque()
        self._free_slots = depth
        self.batches = 0  # batches sent, and items in them: their ratio is the coalescing achieved
        self.items = 0

    @property
    def queued(self) -> int:
        """Callers waiting for a batch."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> R:
        """Send ``item``, alone or with others; return its result once its batch is answered, or raise its error."""
        me = _Caller(item)
        with self._lock:
            self._queue.append(me)
            if self._free_slots:
                self._free_slots -= 1
                me.sender = True
        try:
            while True:
                with self._lock:
                    send, me.sender = me.sender, False
                    if not send:
                        if me.done:
                            break
                        me.wake.clear()
                if send:
                    self._send_batch()  # sends from the head of the queue: this caller's item, or earlier ones
                else:
                    me.wake.wait()
        except BaseException:
            self._abandon(me)  # interrupted (Ctrl-C) while waiting: leave no queued item or send slot behind
            raise
        if isinstance(me.outcome, BaseException):
            raise me.outcome
        return me.outcome  # type: ignore[return-value]  # an R, as send returned it

    def _send_batch(self) -> None:
        """Send the head of the queue as one batch (using a slot this thread holds), then pass the slot on."""
        with self._lock:
            batch = self._take()
        outcomes: Sequence[R | BaseException] | None = None
        shard_error: BaseException | None = None
        try:
            if batch:
                outcomes = self._send([caller.item for caller in batch])
                if len(outcomes) != len(batch):
                    raise ClusterError(f"a batch of {len(batch)} requests got {len(outcomes)} answers")
        except Exception as exc:  # noqa: BLE001 - it is every item's error, raised in each caller's thread
            outcomes = [exc] * len(batch)
            shard_error = exc if self._fails_queued(exc) else None
        finally:
            if outcomes is None:  # interrupted (KeyboardInterrupt): a write may or may not have happened
                outcomes = [ClusterError("the request was interrupted; a write may still happen")] * len(batch)
            self._finish(batch, outcomes, shard_error)

    def _take(self) -> list[_Caller[T]]:
        """Pop the next batch off the queue (lock held)."""
        return take_batch(self._queue, lambda caller: self._size(caller.item), self._max_items, self._max_bytes)

    def _finish(self, batch: list[_Caller[T]], outcomes: Sequence[object], shard_error: BaseException | None) -> None:
        with self._lock:
            if batch:
                self.batches += 1
                self.items += len(batch)
            done = list(zip(batch, outcomes, strict=True))
            if shard_error is not None:  # the queued would go to the same unanswering shard: fail them now
                done += [(caller, shard_error) for caller in self._queue if not caller.sender]
                self._queue = deque(caller for caller in self._queue if caller.sender)
            for caller, outcome in done:
                caller.outcome, caller.done = outcome, True
                caller.wake.set()
            self._pass_slot()

    def _abandon(self, caller: _Caller[T]) -> None:
        """A caller gives up: drop its item if not yet taken, and pass on a send slot it was handed."""
        with self._lock:
            if caller in self._queue:
                self._queue.remove(caller)
            if caller.sender:
                caller.sender = False
                self._pass_slot()

    def _pass_slot(self) -> None:
        """Hand a send slot to the first queued caller not already holding one, or free it (lock held)."""
        heir = next((caller for caller in self._queue if not caller.sender), None)
        if heir is None:
            self._free_slots += 1
        else:
            heir.sender = True
            heir.wake.set()
