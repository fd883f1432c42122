"""One flow behind every cached call, sync or async.

A cacheable call (:class:`Flow`) goes through the same decisions either way:

1. :meth:`Flow.lookup`: the cached answer, if any (blocking: it may embed the
   prompt; skipped for ``cache_refresh``);
2. :meth:`Flow.begin`: with that, the next step: :class:`Answer` (a hit),
   :class:`Wait` (an identical call is in flight: follow it), or
   :class:`Upstream` (call upstream, leading a flight or, for streams and
   refreshes, on its own);
3. after a :class:`Wait`, :meth:`Flow.after_wait`: the answer the leader left,
   or :class:`Upstream` when it failed or left none (each follower of a failed
   leader calls on its own: :mod:`semcache._cache.single_flight`);
4. :meth:`Flow.finish`: the fresh result, recorded; leaving the
   :class:`Upstream` step's ``with`` block lands the flight it leads.

:func:`wrap_call` builds the two shells that run these steps: the sync one
calls them in turn; the async one runs the lookups in the default executor
(off the event loop), awaits the leader and the upstream call, and takes every
other step on the loop, so a cancelled task never holds a flight it cannot land.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semcache._cache.single_flight import Follow, Lead

from ._plan import CONTROLS, Plan

if TYPE_CHECKING:
    from ._core import OpenAICache

__all__ = ["Answer", "Flow", "Upstream", "Wait", "wrap_call"]


# Steps are made on every call (an exact hit included): slotted, not frozen, as they build faster so.
@dataclass(slots=True)
class Answer:
    """The call is answered from the cache with ``value``."""

    value: Any


@dataclass(slots=True)
class Wait:
    """An identical call is in flight: wait for it to land, then look again."""

    flight: Follow[None]


@dataclass(slots=True)
class Upstream:
    """The call goes upstream; when it leads a flight, leaving the ``with`` block lands it (failed on an error)."""

    lead: Lead[None] | None

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        if self.lead is None:
            return
        if error is None:
            self.lead.land(None)  # the answer is in the write-behind map by now: followers find it there
        else:
            self.lead.fail()


class Flow:
    """The decisions of one cacheable call; the shells built by :func:`wrap_call` run them."""

    __slots__ = ("asynchronous", "core", "looks_up", "plan")

    def __init__(self, core: OpenAICache, plan: Plan, *, asynchronous: bool) -> None:
        self.core = core
        self.plan = plan
        self.asynchronous = asynchronous
        self.looks_up = not plan.refresh  # whether the call looks in the cache first (not for cache_refresh)

    def lookup(self) -> Any:
        """The cached answer, ready to return, or None on a miss.  Blocking: it may embed the prompt."""
        return self.core.answer(self.plan, asynchronous=self.asynchronous)

    def begin(self, answer: Any) -> Answer | Upstream | Wait:
        """The step after the first lookup (``answer``: what it found, None on a miss or with no lookup)."""
        if answer is not None:
            return Answer(answer)
        if self.plan.refresh or self.plan.stream:
            return Upstream(None)  # no single flight: a stream is stored only once read to its end
        flight = self.core.flights.begin(self.core.address(self.plan).key)
        if isinstance(flight, Follow):
            self.core.count("single_flight_waits")
            return Wait(flight)
        try:
            pending = self.core.pending_answer(self.plan, asynchronous=self.asynchronous)  # a flight landed meanwhile
        except BaseException:
            flight.fail()
            raise
        if pending is not None:
            flight.land(None)
            return Answer(pending)
        return Upstream(flight)

    def after_wait(self, answer: Any) -> Answer | Upstream:
        """The step after following a flight (``answer``: a lookup's once the leader landed, None if it failed)."""
        return Answer(answer) if answer is not None else Upstream(None)

    def finish(self, result: Any) -> Any:
        """The fresh ``result`` given back, stored (or, for a stream, recorded to be stored at its end)."""
        return self.core.record(self.plan, result, asynchronous=self.asynchronous)


def wrap_call(
    core: OpenAICache, fn: Callable[..., Any], endpoint: str, request_of: Callable[..., dict[str, Any]]
) -> Any:
    """``fn`` (sync or async) with caching through ``core``; ``request_of(*args, **kwargs)`` names its request.

    The per-call controls (``cache_skip``, ``cache_refresh``, ``cache_scope``)
    are taken out of the keyword arguments before ``fn`` sees them.
    """

    def start(args: tuple[Any, ...], kwargs: dict[str, Any], *, asynchronous: bool) -> Flow | None:
        controls = {name: kwargs.pop(name) for name in CONTROLS if name in kwargs}
        plan = core.plan(endpoint, request_of(*args, **kwargs), controls)
        return None if plan is None else Flow(core, plan, asynchronous=asynchronous)

    # openai's own decorators hide that create() is async: look beneath them.
    if inspect.iscoroutinefunction(inspect.unwrap(fn)):

        @functools.wraps(fn)
        async def cached_async(*args: Any, **kwargs: Any) -> Any:
            flow = start(args, kwargs, asynchronous=True)
            if flow is None:
                return await fn(*args, **kwargs)
            step = flow.begin(await _off_loop(flow.lookup) if flow.looks_up else None)
            if isinstance(step, Wait):
                landed = await step.flight.wait_async()
                step = flow.after_wait(await _off_loop(flow.lookup) if landed is not None else None)
            if isinstance(step, Answer):
                return step.value
            with step:
                return flow.finish(await fn(*args, **kwargs))

        cached_async.__dict__["semcache"] = core  # the adapter (its stats, flush()) on the wrapper
        return cached_async

    @functools.wraps(fn)
    def cached(*args: Any, **kwargs: Any) -> Any:
        flow = start(args, kwargs, asynchronous=False)
        if flow is None:
            return fn(*args, **kwargs)
        step = flow.begin(flow.lookup() if flow.looks_up else None)
        if isinstance(step, Wait):
            landed = step.flight.wait()
            step = flow.after_wait(flow.lookup() if landed is not None else None)
        if isinstance(step, Answer):
            return step.value
        with step:
            return flow.finish(fn(*args, **kwargs))

    cached.__dict__["semcache"] = core  # the adapter (its stats, flush()) on the wrapper
    return cached


async def _off_loop(lookup: Callable[[], Any]) -> Any:
    """``lookup()`` in the default executor: it may embed the prompt, which must not block the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, lookup)
