"""The cached endpoints and the pass-through: a request flows size check → key → body → plan → lookup → answer.

A hit is answered from the cache; a miss goes upstream, is relayed (a stream
chunk by chunk) and stored in the background.  A failing cache never fails a
call: the request goes upstream uncached with ``x-semcache: bypass``.
Identical concurrent plain misses share one upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from semcache._cache.cache import CacheHit
from semcache.integrations.openai._shapes import chunks_to_completion

from .auth import Caller
from .caching import hit_chunks, hit_json, record_of, sse
from .metrics import RecentHit, Usage
from .requests import CACHED_PATHS, BadRequest, Plan, parse_body, plan_for
from .state import Gateway, TooLarge, error_response, unauthorized
from .upstream import UpstreamFailure, response_headers

__all__ = ["Call", "CachedEndpoints"]

log = logging.getLogger("semcache.gateway")


@dataclass
class Call:
    """One request to a cached endpoint, as it goes through the gateway."""

    caller: Caller
    endpoint: str
    model: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    started: float


class CachedEndpoints:
    """``POST /v1/chat/completions``, ``POST /v1/responses`` and every other ``/v1/`` call (passed through)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Plain misses in flight, by entry key. SingleFlight (semcache._cache.single_flight) blocks a thread while
        # it waits, which an event loop must not; this keeps its semantics: when the leader fails, each follower
        # makes its own call.
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}

    async def cached(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` and ``POST /v1/responses``."""
        endpoint = CACHED_PATHS[request.url.path]
        started = time.perf_counter()
        caller = self.gateway.caller_of(request)
        if caller is None:
            return unauthorized()
        try:
            raw = await self.gateway.read_body(request)
            body = parse_body(raw)
            plan = plan_for(endpoint, body, request.headers, caller, default_rate=self.gateway.default_rate)
        except TooLarge:
            return self.gateway.too_large()
        except BadRequest as exc:
            return error_response(exc.status, str(exc), param=exc.param, code=exc.code)
        model = str(body["model"])
        if self.gateway.config.upstream_for(model) is None:
            return error_response(404, f"the model {model!r} does not exist or no upstream serves it",
                                  code="model_not_found", param="model")
        call = Call(caller, endpoint, model, body, raw, dict(request.headers), started)
        if plan is None:
            return await self._upstream(call, None, outcome="bypass", reason="policy")
        if plan.lookup and caller.tenant.speculative_upstream:
            return await self._speculative(call, plan)
        hit = None
        if plan.lookup:
            try:
                hit = await self._lookup(call, plan)
            except Exception as exc:  # noqa: BLE001 - a failing cache never fails the call
                log.warning("semcache gateway: the cache lookup failed, serving uncached: %s", exc)
                self.gateway.metrics.cache_errors.labels("lookup").inc()
                return await self._upstream(call, None, outcome="bypass", reason="cache_error")
        if hit is not None:
            answer = self._hit(call, plan, hit)
            if answer is not None:
                return answer
        return await self._miss(call, plan)

    def _hit(self, call: Call, plan: Plan, hit: CacheHit) -> Response | None:
        """The cached answer for a hit (None: a record this endpoint cannot replay, so a miss)."""
        chunks = hit_chunks(hit, include_usage=plan.include_usage) if plan.stream else None
        answer = None if plan.stream else hit_json(hit)
        if chunks is None and answer is None:
            return None
        headers = {"x-semcache": "hit", "x-semcache-similarity": f"{hit.similarity:.6f}", "x-semcache-key": hit.key}
        record = hit.response["completion" if hit.response["type"] == "chat.completion" else "response"]
        recent = RecentHit(time.time(), call.caller.tenant.name, call.model, plan.prompt, hit.cached_prompt,
                           round(float(hit.similarity), 6), None if hit.score is None else round(hit.score, 6),
                           hit.exact, hit.key)
        self.gateway.remember_hit(hit)
        self.gateway.metrics.hit(call.caller.tenant.name, call.model, call.endpoint, recent,
                                 Usage.of(record.get("usage")), time.perf_counter() - call.started)
        if chunks is not None:
            events = [sse(chunk) for chunk in chunks] + [sse("[DONE]")]
            return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)
        return JSONResponse(answer, headers=headers)

    async def _miss(self, call: Call, plan: Plan) -> Response:
        """Ask the upstream; store the answer; identical concurrent plain misses share one upstream call."""
        key = self.gateway.cache.key_of(plan)
        if plan.stream:
            return await self._upstream(call, plan, outcome="miss", key=key)
        waiting = self._flights.get(key)
        if waiting is not None:
            data = await asyncio.shield(waiting)
            if data is not None:
                self.gateway.metrics.miss(call.caller.tenant.name, call.model, call.endpoint,
                                          time.perf_counter() - call.started, looked_up=plan.lookup)
                return Response(data, media_type="application/json",
                                headers={"x-semcache": "miss", "x-semcache-key": key})
            return await self._upstream(call, plan, outcome="miss", key=key)  # the leader failed: our own call
        flight: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            response = await self._upstream(call, plan, outcome="miss", key=key, flight=flight)
        finally:
            self._flights.pop(key, None)
            if not flight.done():
                flight.set_result(None)
        return response

    # ------------------------------------------------------------ upstream calls
    async def _upstream(
        self, call: Call, plan: Plan | None, *, outcome: str, reason: str = "", key: str | None = None,
        flight: asyncio.Future[bytes | None] | None = None,
    ) -> Response:
        """Send ``call`` upstream and answer with what it says (relayed as a stream when it is one)."""
        sent = time.perf_counter()
        return await self._answer(call, plan, await self._send(call), sent, outcome=outcome, reason=reason,
                                  key=key, flight=flight)

    async def _send(self, call: Call) -> httpx.Response | UpstreamFailure:
        """The upstream's response to ``call``, its body not yet read; or why there is none."""
        upstream = self.gateway.config.upstream_for(call.model)
        assert upstream is not None  # checked before
        path = call.endpoint.replace("chat.completions", "/chat/completions").replace("responses", "/responses")
        try:
            return await self.gateway.upstreams.open(upstream, "POST", path, headers=call.headers, body=call.raw,
                                                     key=call.caller.forward_key)
        except UpstreamFailure as exc:
            return exc

    async def _answer(
        self, call: Call, plan: Plan | None, sent: httpx.Response | UpstreamFailure, sent_at: float, *,
        outcome: str, reason: str = "", key: str | None = None, flight: asyncio.Future[bytes | None] | None = None,
    ) -> Response:
        """The answer to ``call`` from what the upstream sent: relayed, stored, or its error passed through."""
        upstream = self.gateway.config.upstream_for(call.model)
        assert upstream is not None
        tenant = call.caller.tenant.name
        if isinstance(sent, UpstreamFailure):
            return self._failed(call, upstream.name, sent)
        headers = {**response_headers(sent), "x-semcache": "bypass" if outcome == "bypass" else "miss"}
        if key:
            headers["x-semcache-key"] = key
        is_stream = sent.headers.get("content-type", "").startswith("text/event-stream")
        if sent.status_code == 200 and is_stream:
            return StreamingResponse(self._relay(call, plan, sent, upstream, outcome, reason, sent_at),
                                     status_code=200, headers=headers)
        try:
            data = await self.gateway.upstreams.read(sent, upstream)
        except UpstreamFailure as exc:
            return self._failed(call, upstream.name, exc)
        self.gateway.metrics.upstream_took(tenant, call.model, time.perf_counter() - sent_at)
        if sent.status_code != 200:
            self.gateway.metrics.upstream_errors.labels(upstream.name, str(sent.status_code)).inc()
            self.gateway.metrics.error(tenant, call.model, call.endpoint)
            return Response(data, status_code=sent.status_code, headers=headers)  # never cached
        self._finish(call, plan, outcome, reason)
        if plan is not None and plan.store:
            self._store_answer(call, plan, data)
        if flight is not None and not flight.done():
            flight.set_result(data)
        return Response(data, status_code=200, headers=headers)

    def _failed(self, call: Call, upstream: str, failure: UpstreamFailure) -> Response:
        """A timeout (504) or an unreachable upstream (502), counted."""
        self.gateway.metrics.upstream_errors.labels(upstream, str(failure.status)).inc()
        self.gateway.metrics.error(call.caller.tenant.name, call.model, call.endpoint)
        return JSONResponse(failure.body, status_code=failure.status)

    async def _speculative(self, call: Call, plan: Plan) -> Response:
        """Race the upstream call against the semantic lookup (the tenant opted in).

        An exact hit is answered first, with no upstream call.  Then the
        upstream call and the semantic lookup start together: a hit that comes
        first cancels the call (which the provider may still bill); an answer
        that comes first is served (and stored) without waiting for the lookup.
        """
        try:  # an exact hit first: it needs no model, so it is answered before any upstream call
            exact = await anyio.to_thread.run_sync(self.gateway.cache.exact, plan)
        except Exception:  # noqa: BLE001 - the lookup below meets the same failure and handles it
            exact = None
        answer = self._hit(call, plan, exact) if exact is not None else None
        if answer is not None:
            return answer
        sent_at = time.perf_counter()
        sending = asyncio.get_running_loop().create_task(self._send(call))
        looking = asyncio.get_running_loop().create_task(self._lookup(call, plan))
        done, _ = await asyncio.wait({sending, looking}, return_when=asyncio.FIRST_COMPLETED)
        if looking not in done:
            # The upstream answered first: its fresh answer is served (and stored); the lookup, in a worker
            # thread that cannot be stopped, ends unheard.
            looking.add_done_callback(_discard)
            return await self._answer(call, plan, sending.result(), sent_at, outcome="miss",
                                      key=self.gateway.cache.key_of(plan))
        try:
            hit = looking.result()
        except Exception as exc:  # noqa: BLE001 - a failing cache never fails the call
            log.warning("semcache gateway: the cache lookup failed, serving uncached: %s", exc)
            self.gateway.metrics.cache_errors.labels("lookup").inc()
            return await self._answer(call, None, await sending, sent_at, outcome="bypass", reason="cache_error")
        answer = self._hit(call, plan, hit) if hit is not None else None
        if answer is None:
            return await self._answer(call, plan, await sending, sent_at, outcome="miss",
                                      key=self.gateway.cache.key_of(plan))
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            sent = await sending
            if isinstance(sent, httpx.Response):
                await sent.aclose()  # it answered before the lookup ended: drop it unread
        return answer

    async def _lookup(self, call: Call, plan: Plan) -> CacheHit | None:
        """The cache's hit for ``plan``, timed."""
        looked = time.perf_counter()
        hit = await self.gateway.cache.lookup_async(plan, call.caller.tenant)
        self.gateway.metrics.lookup_took(call.caller.tenant.name, call.model, time.perf_counter() - looked)
        return hit

    def _finish(self, call: Call, plan: Plan | None, outcome: str, reason: str) -> None:
        seconds = time.perf_counter() - call.started
        if outcome == "bypass":
            self.gateway.metrics.bypass(call.caller.tenant.name, call.model, call.endpoint, reason, seconds)
        else:
            self.gateway.metrics.miss(call.caller.tenant.name, call.model, call.endpoint, seconds,
                                      looked_up=bool(plan and plan.lookup))

    def _store_answer(self, call: Call, plan: Plan, data: bytes | dict[str, Any]) -> None:
        try:
            answer = json.loads(data) if isinstance(data, bytes) else data
        except ValueError:
            return  # not JSON: passed through, not cached
        record = record_of(plan.endpoint, answer) if isinstance(answer, dict) else None
        if record is None:
            return
        tenant = call.caller.tenant

        def done(error: BaseException | None) -> None:
            if error is None:
                self.gateway.metrics.stored(tenant.name, call.model)
            else:
                self.gateway.metrics.cache_errors.labels("store").inc()

        self.gateway.cache.store_later(plan, tenant, record, done)

    async def _relay(
        self, call: Call, plan: Plan | None, response: Any, upstream: Any, outcome: str, reason: str, sent: float,
    ) -> AsyncIterator[bytes]:
        """Pass a streamed answer through piece by piece, recording its chunks; store it only if it finished."""
        events = _EventReader()
        finished = False
        try:
            async for piece in self.gateway.upstreams.pieces(response):
                events.feed(piece)
                yield piece
            finished = events.done
        except Exception as exc:  # noqa: BLE001 - the upstream broke off: the client sees the stream end
            log.warning("semcache gateway: upstream %s broke off a stream: %s", upstream.name, type(exc).__name__)
        finally:
            self.gateway.metrics.upstream_took(call.caller.tenant.name, call.model, time.perf_counter() - sent)
        self._finish(call, plan, outcome, reason)
        if finished and plan is not None and plan.store:
            completion = chunks_to_completion(events.chunks)
            if completion is not None:
                self._store_answer(call, plan, completion)

    # ------------------------------------------------------------ pass-through
    async def passthrough(self, request: Request) -> Response:
        """Every other ``/v1/...`` call: sent to the upstream unchanged, its answer streamed back."""
        caller = self.gateway.caller_of(request)
        if caller is None:
            return unauthorized()
        try:
            raw = await self.gateway.read_body(request)
        except TooLarge:
            return self.gateway.too_large()
        model = _model_of(raw)
        upstream = self.gateway.config.upstream_for(model or "") or self.gateway.config.upstreams[0]
        try:
            response = await self.gateway.upstreams.open(upstream, request.method, request.url.path.removeprefix("/v1"),
                                                         headers=dict(request.headers), body=raw or None,
                                                         query=request.url.query, key=caller.forward_key)
        except UpstreamFailure as exc:
            self.gateway.metrics.upstream_errors.labels(upstream.name, str(exc.status)).inc()
            return JSONResponse(exc.body, status_code=exc.status)
        headers = {**response_headers(response), "x-semcache": "bypass"}
        return StreamingResponse(self.gateway.upstreams.pieces(response), status_code=response.status_code,
                                 headers=headers)

    # ------------------------------------------------------------ feedback


def _discard(task: asyncio.Task[Any]) -> None:
    """Retrieve a finished task's outcome that nobody waits for (so asyncio does not warn of it)."""
    if not task.cancelled():
        task.exception()


def _model_of(raw: bytes) -> str | None:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


async def _iterate(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


class _EventReader:
    """Reads server-sent events as they arrive: the JSON chunks, and whether ``data: [DONE]`` came."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.done = False
        self._buffer = b""

    def feed(self, piece: bytes) -> None:
        self._buffer += piece.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        with contextlib.suppress(ValueError):
            chunk = json.loads(data)
            if isinstance(chunk, dict):
                self.chunks.append(chunk)
