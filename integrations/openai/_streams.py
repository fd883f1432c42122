"""Streams the adapter hands back: a miss passed through while recorded, a hit replayed.

Each kind has one core and two thin shells, one per iteration protocol:

* :class:`Recorder` collects the chunks of an upstream stream as they pass and
  reports them once: all of them when the upstream ended normally, None when it
  raised or the caller closed it (or dropped it) early.
  :class:`RecordingStream` and :class:`RecordingAsyncStream` feed it.
* :class:`Replay` holds a cached answer's chunks; :class:`ReplayStream` and
  :class:`ReplayAsyncStream` hand them out (quacking like ``openai.Stream`` and
  ``openai.AsyncStream``: iteration, ``close()``, use as a context manager).

>>> seen = []
>>> stream = RecordingStream(iter(["a", "b"]), Recorder(seen.append))
>>> list(stream), seen
(['a', 'b'], [['a', 'b']])
>>> stream = RecordingStream(iter(["a", "b"]), Recorder(seen.append))
>>> next(stream), stream.close(), seen[-1]
('a', None, None)
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

import pydantic

__all__ = [
    "Recorder",
    "RecordingAsyncStream",
    "RecordingStream",
    "Replay",
    "ReplayAsyncStream",
    "ReplayStream",
    "is_stream",
]


def is_stream(result: Any) -> bool:
    """A stream of chunks: iterable, but not a str, container or model (pydantic models iterate their fields)."""
    if isinstance(result, str | bytes | Mapping | Sequence | pydantic.BaseModel):
        return False
    return hasattr(result, "__iter__") or hasattr(result, "__aiter__")


# ------------------------------------------------------------------ recording
class Recorder:
    """The chunks of one stream passing through, reported once to ``on_done`` when the stream ends.

    ``on_done`` gets the list of chunks if :meth:`complete` was called before
    :meth:`end` (the upstream was exhausted), else None (it raised, or the
    caller stopped reading).
    """

    def __init__(self, on_done: Callable[[list[Any] | None], None]) -> None:
        self._on_done = on_done
        self._chunks: list[Any] = []
        self._complete = False
        self._ended = False

    def add(self, chunk: Any) -> Any:
        """Note ``chunk``, and give it back to pass on."""
        self._chunks.append(chunk)
        return chunk

    def complete(self) -> None:
        """The upstream ended normally: every chunk was seen."""
        self._complete = True

    def end(self) -> None:
        """The stream is over, one way or another: report (once)."""
        if not self._ended:
            self._ended = True
            self._on_done(self._chunks if self._complete else None)


class _Recording:
    """What both recording streams share: the upstream, its recorder, and the upstream's other attributes."""

    def __init__(self, upstream: Any, recorder: Recorder) -> None:
        self._upstream = upstream
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:  # response, headers...: the upstream stream's
        return getattr(self.__dict__["_upstream"], name)


class RecordingStream(_Recording):
    """An upstream sync stream passed through chunk by chunk and recorded.

    The generator's ``finally`` reports the recording also when the caller
    drops the stream without closing it (when the generator is collected).
    """

    def __init__(self, upstream: Iterable[Any], recorder: Recorder) -> None:
        super().__init__(upstream, recorder)
        self._iterator = self._run()

    def _run(self) -> Generator[Any, None, None]:
        """The upstream's chunks, each noted by the recorder; the recording ends with the generator."""
        try:
            for chunk in self._upstream:
                yield self._recorder.add(chunk)
            self._recorder.complete()
        finally:
            self._recorder.end()

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._iterator.close()
        close = getattr(self._upstream, "close", None)
        if close is not None:
            close()


class RecordingAsyncStream(_Recording):
    """An upstream async stream passed through chunk by chunk and recorded."""

    def __init__(self, upstream: Any, recorder: Recorder) -> None:
        super().__init__(upstream, recorder)
        self._iterator = self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        """The upstream's chunks, each noted by the recorder; the recording ends with the generator."""
        try:
            async for chunk in self._upstream:
                yield self._recorder.add(chunk)
            self._recorder.complete()
        finally:
            self._recorder.end()

    def __aiter__(self) -> RecordingAsyncStream:
        return self

    async def __anext__(self) -> Any:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> RecordingAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._iterator.aclose()
        close = getattr(self._upstream, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


# --------------------------------------------------------------------- replay
class Replay:
    """A cached answer's chunks, handed out in order until they run out or the stream is closed."""

    def __init__(self, chunks: Iterable[Any]) -> None:
        self._chunks = deque(chunks)

    def next(self) -> tuple[bool, Any]:
        """``(True, chunk)`` for the next chunk, or ``(False, None)`` when there is none left."""
        return (True, self._chunks.popleft()) if self._chunks else (False, None)

    def close(self) -> None:
        self._chunks.clear()


class ReplayStream:
    """A cached answer replayed as a sync stream of chunks (quacks like ``openai.Stream``)."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> Any:
        more, chunk = self._replay.next()
        if not more:
            raise StopIteration
        return chunk

    def __enter__(self) -> ReplayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._replay.close()


class ReplayAsyncStream:
    """A cached answer replayed as an async stream of chunks (quacks like ``openai.AsyncStream``)."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay

    def __aiter__(self) -> ReplayAsyncStream:
        return self

    async def __anext__(self) -> Any:
        more, chunk = self._replay.next()
        if not more:
            raise StopAsyncIteration
        return chunk

    async def __aenter__(self) -> ReplayAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._replay.close()
