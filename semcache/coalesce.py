"""Write coalescing: concurrent writes to one shard share a request.

A write to a cluster costs a Flight call and a share of a Raft entry (pickled,
encrypted, sent to every follower, acknowledged).  When many threads write to
one shard at once, :class:`WriteCombiner` lets them share those costs: at most
``depth`` requests to the shard are in flight; a writer that finds a free slot
sends at once (so a lone writer waits for nothing), and writers that arrive
while the slots are taken queue up.  When a request finishes, its slot passes to
the first queued writer, which sends everything queued by then (up to
``max_items`` and ``max_bytes``) as one request.  No thread of its own: the
writers send for each other.

>>> sent = []
>>> combiner = WriteCombiner(lambda batch: sent.append(batch) or [None] * len(batch), size=len)
>>> combiner.submit("a")
>>> combiner.submit("bb")
>>> sent
[['a'], ['bb']]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import ClusterError

T = TypeVar("T")

DEFAULT_DEPTH = 1  # one request in flight per shard: the others queue and share the next (measured best)
DEFAULT_MAX_ITEMS = 64
DEFAULT_MAX_BYTES = 48 * 1024  # so a request fits one Raft entry (60 KiB) with room for the encoding


@dataclass(eq=False)
class _Writer(Generic[T]):
    """A writer waiting for its item to be sent, or for its turn to send."""

    item: T
    wake: threading.Event = field(default_factory=threading.Event)
    sender: bool = False  # holds a send slot it has not used yet
    done: bool = False
    error: BaseException | None = None


class WriteCombiner(Generic[T]):
    """Sends items through ``send`` in batches, as many per batch as were waiting.

    Args:
        send: sends a batch; returns one error (or None) per item, in order, or
            raises an error that then applies to every item of the batch.
        size: an item's size in bytes, for ``max_bytes``.
        depth: batches in flight at once.
        max_items, max_bytes: bounds of one batch (a single item may exceed ``max_bytes``).
    """

    def __init__(
        self,
        send: Callable[[list[T]], Sequence[BaseException | None]],
        *,
        size: Callable[[T], int],
        depth: int = DEFAULT_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if depth < 1 or max_items < 1:
            raise ValueError("depth and max_items must be >= 1")
        self._send = send
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: deque[_Writer[T]] = deque()
        self._free_slots = depth
        self.batches = 0  # batches sent, and items in them: their ratio is the coalescing achieved
        self.items = 0

    @property
    def queued(self) -> int:
        """Writers waiting for a batch."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> None:
        """Send ``item``, alone or with others, and return once its batch is answered; raise its error."""
        me = _Writer(item)
        with self._lock:
            self._queue.append(me)
            if self._free_slots:
                self._free_slots -= 1
                me.sender = True
        while True:
            with self._lock:
                send, me.sender = me.sender, False
                if not send:
                    if me.done:
                        break
                    me.wake.clear()
            if send:
                self._send_batch()  # sends from the head of the queue: this writer's item, or earlier ones
            else:
                me.wake.wait()
        if me.error is not None:
            raise me.error

    def _send_batch(self) -> None:
        """Send the head of the queue as one batch (using a slot this thread holds), then pass the slot on."""
        with self._lock:
            batch = self._take()
        errors: Sequence[BaseException | None] | None = None
        try:
            if batch:
                errors = self._send([writer.item for writer in batch])
                if len(errors) != len(batch):
                    raise ClusterError(f"a batch of {len(batch)} writes got {len(errors)} answers")
        except Exception as exc:  # noqa: BLE001 - it is every item's error, raised in each writer's thread
            errors = [exc] * len(batch)
        finally:
            if errors is None:  # interrupted (KeyboardInterrupt): the writes may or may not have happened
                errors = [ClusterError("the write was interrupted; it may still happen")] * len(batch)
            self._finish(batch, errors)

    def _take(self) -> list[_Writer[T]]:
        """Pop the next batch off the queue (lock held): at least one item if any, then up to the bounds."""
        batch: list[_Writer[T]] = []
        size = 0
        while self._queue and len(batch) < self._max_items:
            item_size = self._size(self._queue[0].item)
            if batch and size + item_size > self._max_bytes:
                break
            batch.append(self._queue.popleft())
            size += item_size
        return batch

    def _finish(self, batch: list[_Writer[T]], errors: Sequence[BaseException | None]) -> None:
        with self._lock:
            if batch:
                self.batches += 1
                self.items += len(batch)
            for writer, error in zip(batch, errors, strict=True):
                writer.error, writer.done = error, True
                writer.wake.set()
            # Hand the slot to the first queued writer not already holding one, or free it.
            heir = next((writer for writer in self._queue if not writer.sender), None)
            if heir is None:
                self._free_slots += 1
            else:
                heir.sender = True
                heir.wake.set()
