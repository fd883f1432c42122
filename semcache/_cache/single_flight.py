"""Single flight: identical calls missing at the same time make one call.

The first caller for a key **leads**: it makes the call and then lands its
flight with the result (:meth:`Lead.land`) or as failed (:meth:`Lead.fail`,
or by leaving its ``with`` block on an exception).  Callers arriving while the
flight is up **follow**: they wait for it to land, then take the leader's
result.

**Failure semantic: followers of a failed leader each call on their own.**
They are told only that the leader failed (:meth:`Follow.wait` returns None),
never handed its exception, and each then makes its own call, outside any
flight, as it would with no single flight at all.  Why:

* A leader's failure is its own: its timeout or its cancellation
  (``asyncio.CancelledError``, ``KeyboardInterrupt`` in its thread), or a
  transient upstream error.  Raising it in callers that made no such call
  fails them for something they did not do, and one exception object raised
  in several threads at once gets their tracebacks chained into it.
* Nothing is cached after a failure, so the retries cost at most what the
  callers would have cost without single flight, never more; and they run in
  parallel, so no caller waits behind a chain of failing leaders.

Both users follow it: :meth:`SemanticCache.get_or_compute
<semcache._cache.cache.SemanticCache.get_or_compute>` (a follower of a failed
leader runs ``fn`` itself, so it gets its own answer or its own exception) and
the OpenAI adapter (a follower of a failed leader calls upstream itself).

>>> flights = SingleFlight()
>>> lead, follow = flights.begin("k"), flights.begin("k")
>>> isinstance(lead, Lead), isinstance(follow, Follow)
(True, True)
>>> lead.land("answer")
>>> follow.wait()
Landed(value='answer')
>>> with flights.begin("k") as failing:  # leaving the block on an error lands it as failed
...     late = flights.begin("k")
...     raise RuntimeError("upstream down")
Traceback (most recent call last):
    ...
RuntimeError: upstream down
>>> late.wait() is None  # the follower learns only that it must call on its own
True
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Follow", "Landed", "Lead", "SingleFlight"]

T = TypeVar("T")

_FAILED: Any = object()  # what a failed flight's future holds: no exception object is shared


@dataclass(frozen=True)
class Landed(Generic[T]):
    """What a follower gets from a leader that succeeded: the leader's result, shared by every follower."""

    value: T


class Lead(Generic[T]):
    """This caller leads the flight for its key: it makes the call, then lands the flight exactly once.

    As a context manager, leaving the block without having landed lands the
    flight as failed, so an exception (or a cancellation) never strands the
    followers.
    """

    def __init__(self, flights: SingleFlight[T], key: str, future: Future[T]) -> None:
        self._flights = flights
        self.key = key
        self._future = future

    def land(self, value: T) -> None:
        """End the flight with the leader's result: its followers take ``value``."""
        self._end(value)

    def fail(self) -> None:
        """End the flight as failed: its followers each call on their own."""
        self._end(_FAILED)

    @property
    def landed(self) -> bool:
        """Whether the flight has landed (succeeded or failed)."""
        return self._future.done()

    def _end(self, outcome: T) -> None:
        """Land once: out of the flights in the air first, then the followers released."""
        if self._future.done():
            return
        self._flights._remove(self.key, self._future)  # first: a caller arriving from now on starts a new flight
        self._future.set_result(outcome)

    def __enter__(self) -> Lead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.landed:
            self.fail()


class Follow(Generic[T]):
    """This caller follows the flight in the air for its key: it waits for the leader to land."""

    def __init__(self, key: str, future: Future[T]) -> None:
        self.key = key
        self._future = future

    def wait(self, timeout: float | None = None) -> Landed[T] | None:
        """Block until the flight lands: the leader's result, or None when it failed (call on your own).

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        return self._outcome(self._future.result(timeout))

    async def wait_async(self) -> Landed[T] | None:
        """:meth:`wait` for asyncio callers: the event loop keeps running meanwhile."""
        return self._outcome(await asyncio.wrap_future(self._future))

    @staticmethod
    def _outcome(value: T) -> Landed[T] | None:
        """What a follower sees of the value the flight landed with."""
        return None if value is _FAILED else Landed(value)


class SingleFlight(Generic[T]):
    """The flights in the air, by key.  Thread-safe; a flight's waiters may be threads or asyncio tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Future[T]] = {}

    def begin(self, key: str) -> Lead[T] | Follow[T]:
        """Lead a new flight for ``key``, or follow the one already in the air."""
        with self._lock:
            future = self._flights.get(key)
            if future is not None:
                return Follow(key, future)
            future = self._flights[key] = Future()
        return Lead(self, key, future)

    def _remove(self, key: str, future: Future[T]) -> None:
        """Take the flight ``future`` for ``key`` out of the air (if it is still the one there)."""
        with self._lock:
            if self._flights.get(key) is future:
                del self._flights[key]

    def __len__(self) -> int:
        """Flights in the air."""
        with self._lock:
            return len(self._flights)
