"""The gateway's HTTP application (Starlette): cached endpoints, pass-through, admin, metrics, dashboard.

A request flows one way: size check → key → body → plan → lookup → (hit: the
cached answer) or (miss: the upstream, relayed and stored).  A failing cache
never fails a call: the request goes upstream uncached with
``x-semcache: bypass``.  No traceback ever reaches a caller: an unexpected
error is logged and answered with a 500 in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from semcache._cache.cache import CacheHit
from semcache._cache.decision import DEFAULT_MAX_WRONG_RATE, wrong_rate_of
from semcache.integrations.openai._shapes import chunks_to_completion

from .auth import Caller, KeyTable, bearer_key
from .caching import GatewayCache, hit_chunks, hit_json, record_of, sse, tenant_of_key
from .config import GatewayConfig, Tenant
from .metrics import GatewayMetrics, RecentHit, Usage
from .requests import CACHED_PATHS, BadRequest, Plan, parse_body, plan_for
from .upstream import UpstreamFailure, Upstreams, error_body, response_headers

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("semcache.gateway")
COOKIE = "semcache_dashboard"


def _error(status: int, message: str, kind: str = "invalid_request_error", *, code: str | None = None,
           param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code=code, param=param), status_code=status)


class _TooLarge(Exception):
    pass


@dataclass
class _Call:
    """One request to a cached endpoint, as it goes through the gateway."""

    caller: Caller
    endpoint: str
    model: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    started: float


class Gateway:
    """The gateway's state (config, keys, cache, upstream client, metrics) and its request handlers."""

    def __init__(self, config: GatewayConfig, cache: GatewayCache, *, upstreams: Upstreams | None = None) -> None:
        self.config = config
        self.cache = cache
        self.keys = KeyTable(config.tenants, admin_hashes=config.server.admin_key_hashes,
                             passthrough=config.passthrough)
        self.upstreams = upstreams or Upstreams()
        self.metrics = GatewayMetrics([t.name for t in config.tenants], recent=config.server.recent_hits,
                                      price_of=config.price_of)
        rate = config.cache.max_wrong_rate
        self.default_rate = DEFAULT_MAX_WRONG_RATE if rate is None else wrong_rate_of(rate)
        self.default_tenant = Tenant("passthrough", (), config.cache.max_wrong_rate, None, config.cache.ttl)
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._recent_hits: dict[str, CacheHit] = {}  # by key: the pair a wrong-hit report records
        for tenant in config.tenants:
            cache.check_tenant(tenant)

    # ------------------------------------------------------------ reading a request
    async def _body(self, request: Request) -> bytes:
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> JSONResponse:
        return _error(413, f"the request body is over the gateway's limit of {self.config.server.max_body_bytes} "
                           "bytes", code="request_too_large")

    def _caller(self, request: Request) -> Caller | None:
        return self.keys.caller(bearer_key(request.headers), self.default_tenant)

    @staticmethod
    def _unauthorized() -> JSONResponse:
        return _error(401, "missing or unknown API key: send Authorization: Bearer <your gateway key>",
                      "invalid_request_error", code="invalid_api_key")

    # ------------------------------------------------------------ cached endpoints
    async def cached(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` and ``POST /v1/responses``."""
        endpoint = CACHED_PATHS[request.url.path]
        started = time.perf_counter()
        caller = self._caller(request)
        if caller is None:
            return self._unauthorized()
        try:
            raw = await self._body(request)
            body = parse_body(raw)
            plan = plan_for(endpoint, body, request.headers, caller, default_rate=self.default_rate)
        except _TooLarge:
            return self._too_large()
        except BadRequest as exc:
            return _error(exc.status, str(exc), param=exc.param, code=exc.code)
        model = str(body["model"])
        if self.config.upstream_for(model) is None:
            return _error(404, f"the model {model!r} does not exist or no upstream serves it", code="model_not_found",
                          param="model")
        call = _Call(caller, endpoint, model, body, raw, dict(request.headers), started)
        if plan is None:
            return await self._upstream(call, None, outcome="bypass", reason="policy")
        hit = None
        if plan.lookup:
            try:
                looked = time.perf_counter()
                hit = await self.cache.lookup_async(plan, caller.tenant)
                self.metrics.lookup_took(caller.tenant.name, model, time.perf_counter() - looked)
            except Exception as exc:  # noqa: BLE001 - a failing cache never fails the call
                log.warning("semcache gateway: the cache lookup failed, serving uncached: %s", exc)
                self.metrics.cache_errors.labels("lookup").inc()
                return await self._upstream(call, None, outcome="bypass", reason="cache_error")
        if hit is not None:
            answer = self._hit(call, plan, hit)
            if answer is not None:
                return answer
        return await self._miss(call, plan)

    def _hit(self, call: _Call, plan: Plan, hit: CacheHit) -> Response | None:
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
        self._remember_hit(hit)
        self.metrics.hit(call.caller.tenant.name, call.model, call.endpoint, recent, Usage.of(record.get("usage")),
                         time.perf_counter() - call.started)
        if chunks is not None:
            events = [sse(chunk) for chunk in chunks] + [sse("[DONE]")]
            return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)
        return JSONResponse(answer, headers=headers)

    def _remember_hit(self, hit: CacheHit) -> None:
        self._recent_hits[hit.key] = CacheHit(None, hit.similarity, hit.cached_prompt, hit.key, {}, hit.exact,
                                              hit.prompt, hit.score)
        while len(self._recent_hits) > max(self.config.server.recent_hits, 1):
            self._recent_hits.pop(next(iter(self._recent_hits)))

    async def _miss(self, call: _Call, plan: Plan) -> Response:
        """Ask the upstream; store the answer; identical concurrent plain misses share one upstream call."""
        key = self.cache.key_of(plan)
        if plan.stream:
            return await self._upstream(call, plan, outcome="miss", key=key)
        waiting = self._flights.get(key)
        if waiting is not None:
            data = await asyncio.shield(waiting)
            if data is not None:
                self.metrics.miss(call.caller.tenant.name, call.model, call.endpoint,
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
        self, call: _Call, plan: Plan | None, *, outcome: str, reason: str = "", key: str | None = None,
        flight: asyncio.Future[bytes | None] | None = None,
    ) -> Response:
        """Send ``call`` upstream and answer with what it says (relayed as a stream when it is one)."""
        upstream = self.config.upstream_for(call.model)
        assert upstream is not None  # checked before
        path = call.endpoint.replace("chat.completions", "/chat/completions").replace("responses", "/responses")
        tenant = call.caller.tenant.name
        sent = time.perf_counter()
        try:
            response = await self.upstreams.open(upstream, "POST", path, headers=call.headers, body=call.raw,
                                                 key=call.caller.forward_key)
        except UpstreamFailure as exc:
            self.metrics.upstream_errors.labels(upstream.name, str(exc.status)).inc()
            self.metrics.error(tenant, call.model, call.endpoint)
            return JSONResponse(exc.body, status_code=exc.status)
        headers = {**response_headers(response), "x-semcache": "bypass" if outcome == "bypass" else "miss"}
        if key:
            headers["x-semcache-key"] = key
        is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        if response.status_code == 200 and is_stream:
            return StreamingResponse(self._relay(call, plan, response, upstream, outcome, reason, sent),
                                     status_code=200, headers=headers)
        try:
            data = await self.upstreams.read(response, upstream)
        except UpstreamFailure as exc:
            self.metrics.upstream_errors.labels(upstream.name, str(exc.status)).inc()
            self.metrics.error(tenant, call.model, call.endpoint)
            return JSONResponse(exc.body, status_code=exc.status)
        self.metrics.upstream_took(tenant, call.model, time.perf_counter() - sent)
        if response.status_code != 200:
            self.metrics.upstream_errors.labels(upstream.name, str(response.status_code)).inc()
            self.metrics.error(tenant, call.model, call.endpoint)
            return Response(data, status_code=response.status_code, headers=headers)  # never cached
        self._finish(call, plan, outcome, reason)
        if plan is not None and plan.store:
            self._store_answer(call, plan, data)
        if flight is not None and not flight.done():
            flight.set_result(data)
        return Response(data, status_code=200, headers=headers)

    def _finish(self, call: _Call, plan: Plan | None, outcome: str, reason: str) -> None:
        seconds = time.perf_counter() - call.started
        if outcome == "bypass":
            self.metrics.bypass(call.caller.tenant.name, call.model, call.endpoint, reason, seconds)
        else:
            self.metrics.miss(call.caller.tenant.name, call.model, call.endpoint, seconds,
                              looked_up=bool(plan and plan.lookup))

    def _store_answer(self, call: _Call, plan: Plan, data: bytes | dict[str, Any]) -> None:
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
                self.metrics.stored(tenant.name, call.model)
            else:
                self.metrics.cache_errors.labels("store").inc()

        self.cache.store_later(plan, tenant, record, done)

    async def _relay(
        self, call: _Call, plan: Plan | None, response: Any, upstream: Any, outcome: str, reason: str, sent: float,
    ) -> AsyncIterator[bytes]:
        """Pass a streamed answer through piece by piece, recording its chunks; store it only if it finished."""
        events = _EventReader()
        finished = False
        try:
            async for piece in self.upstreams.pieces(response):
                events.feed(piece)
                yield piece
            finished = events.done
        except Exception as exc:  # noqa: BLE001 - the upstream broke off: the client sees the stream end
            log.warning("semcache gateway: upstream %s broke off a stream: %s", upstream.name, type(exc).__name__)
        finally:
            self.metrics.upstream_took(call.caller.tenant.name, call.model, time.perf_counter() - sent)
        self._finish(call, plan, outcome, reason)
        if finished and plan is not None and plan.store:
            completion = chunks_to_completion(events.chunks)
            if completion is not None:
                self._store_answer(call, plan, completion)

    # ------------------------------------------------------------ pass-through
    async def passthrough(self, request: Request) -> Response:
        """Every other ``/v1/...`` call: sent to the upstream unchanged, its answer streamed back."""
        caller = self._caller(request)
        if caller is None:
            return self._unauthorized()
        try:
            raw = await self._body(request)
        except _TooLarge:
            return self._too_large()
        model = _model_of(raw)
        upstream = self.config.upstream_for(model or "") or self.config.upstreams[0]
        try:
            response = await self.upstreams.open(upstream, request.method, request.url.path.removeprefix("/v1"),
                                                 headers=dict(request.headers), body=raw or None,
                                                 query=request.url.query, key=caller.forward_key)
        except UpstreamFailure as exc:
            self.metrics.upstream_errors.labels(upstream.name, str(exc.status)).inc()
            return JSONResponse(exc.body, status_code=exc.status)
        headers = {**response_headers(response), "x-semcache": "bypass"}
        return StreamingResponse(self.upstreams.pieces(response), status_code=response.status_code,
                                 headers=headers)

    # ------------------------------------------------------------ feedback
    async def feedback(self, request: Request) -> Response:
        """``POST /v1/semcache/feedback`` ``{"key": ...}``: a tenant reports one of its hits wrong."""
        caller = self._caller(request)
        if caller is None:
            return self._unauthorized()
        key = await self._key_field(request)
        if isinstance(key, Response):
            return key
        if tenant_of_key(key) != caller.tenant.name:
            return _error(404, "no such cache entry for this key", code="not_found", param="key")
        return await self._report(key)

    async def _key_field(self, request: Request) -> str | Response:
        try:
            body = parse_body(await self._body(request))
        except _TooLarge:
            return self._too_large()
        except BadRequest as exc:
            return _error(400, str(exc))
        key = body.get("key")
        if not isinstance(key, str) or tenant_of_key(key) is None:
            return _error(400, "key must be the x-semcache-key of a gateway answer", param="key")
        return key

    async def _report(self, key: str) -> Response:
        hit = self._recent_hits.pop(key, None)
        try:
            deleted = await anyio.to_thread.run_sync(self.cache.report_wrong_hit, key, hit)
        except Exception as exc:  # noqa: BLE001 - a cluster down: say so, keep serving
            log.warning("semcache gateway: a wrong-hit report failed: %s", exc)
            return _error(503, "the cache is unreachable; report again later", "server_error",
                          code="cache_unavailable")
        self.metrics.wrong_hit(str(tenant_of_key(key)))
        self.metrics.forget_recent(key)
        return JSONResponse({"key": key, "deleted": bool(deleted)})

    # ------------------------------------------------------------ health and metrics
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 when the cache and every upstream answer; 503 naming what does not."""
        checks: dict[str, bool] = {}
        try:
            await anyio.to_thread.run_sync(self.cache.size)
            checks["cache"] = True
        except Exception:  # noqa: BLE001 - not ready is the answer
            checks["cache"] = False
        for upstream in self.config.upstreams:
            checks[f"upstream:{upstream.name}"] = await self.upstreams.reachable(upstream)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def prometheus(self, request: Request) -> Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        await self._refresh_size()
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _refresh_size(self) -> tuple[int, int] | None:
        try:
            entries, size = await anyio.to_thread.run_sync(self.cache.size)
        except Exception:  # noqa: BLE001 - the gauges keep their last value
            return None
        self.metrics.entries.set(entries)
        self.metrics.bytes.set(size)
        return entries, size

    # ------------------------------------------------------------ admin
    def _admin_denied(self, request: Request) -> Response | None:
        if not self.keys.has_admin():
            return _error(403, "no admin key is configured (server.admin_key_hashes)", code="admin_disabled")
        cookie = request.cookies.get(COOKIE)
        if self.keys.is_admin(bearer_key(request.headers)) or (cookie and _same(cookie, self.keys.dashboard_cookie())):
            return None
        return _error(401, "this endpoint needs the admin key: Authorization: Bearer <admin key>",
                      code="invalid_api_key")

    async def admin_stats(self, request: Request) -> Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        snapshot = self.metrics.snapshot()
        size = await self._refresh_size()
        snapshot["cache"] = None if size is None else {"entries": size[0], "value_bytes": size[1]}
        return JSONResponse(snapshot)

    async def admin_recent(self, request: Request) -> Response:
        denied = self._admin_denied(request)
        return denied or JSONResponse({"recent_hits": self.metrics.snapshot()["recent_hits"]})

    async def admin_report(self, request: Request) -> Response:
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        key = await self._key_field(request)
        return key if isinstance(key, Response) else await self._report(key)

    async def admin_invalidate(self, request: Request) -> Response:
        """``POST /admin/invalidate`` with ``{"tenant"[, "namespace"]}`` or ``{"key_prefix"}``."""
        denied = self._admin_denied(request)
        if denied is not None:
            return denied
        try:
            body = parse_body(await self._body(request))
            target = _invalidation(body)
        except _TooLarge:
            return self._too_large()
        except BadRequest as exc:
            return _error(400, str(exc), param=exc.param)
        try:
            deleted = await anyio.to_thread.run_sync(lambda: self.cache.invalidate(**target))
        except Exception as exc:  # noqa: BLE001
            log.warning("semcache gateway: invalidation failed: %s", exc)
            return _error(503, "the cache is unreachable", "server_error", code="cache_unavailable")
        return JSONResponse({"deleted": deleted, **target})

    # ------------------------------------------------------------ dashboard
    async def dashboard(self, request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        page = "dashboard.html" if cookie and _same(cookie, self.keys.dashboard_cookie()) else "login.html"
        return HTMLResponse(_static(page))

    async def dashboard_login(self, request: Request) -> Response:
        try:  # a urlencoded form of one field, read here rather than with another dependency (python-multipart)
            form = parse_qs((await self._body(request)).decode("utf-8", "replace"), max_num_fields=4)
        except (_TooLarge, ValueError):
            form = {}
        key = (form.get("key") or [""])[0]
        if not isinstance(key, str) or not self.keys.is_admin(key):
            return HTMLResponse(_static("login.html").replace("<!--error-->", "<p id='login-error'>Wrong key.</p>"),
                                status_code=401)
        response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(COOKIE, self.keys.dashboard_cookie(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def dashboard_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("dashboard.js", "dashboard.css"):
            return _error(404, "no such file", code="not_found")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_static(name), media_type=media)

    async def close(self) -> None:
        """Finish pending stores, then close the upstream client and the cache."""
        await self.cache.drain()
        await self.upstreams.close()
        await anyio.to_thread.run_sync(self.cache.close)


def _invalidation(body: dict[str, Any]) -> dict[str, Any]:
    tenant, namespace, prefix = body.get("tenant"), body.get("namespace"), body.get("key_prefix")
    if prefix is not None:
        if tenant is not None or namespace is not None or not isinstance(prefix, str) \
                or not prefix.startswith("gw."):
            raise BadRequest("key_prefix must be a string starting with 'gw.', given alone", param="key_prefix")
        return {"tenant": None, "namespace": None, "key_prefix": prefix}
    from .config import NAME

    if not isinstance(tenant, str) or not NAME.match(tenant):
        raise BadRequest("give tenant (and optionally namespace) or key_prefix", param="tenant")
    if namespace is not None and (not isinstance(namespace, str) or not NAME.match(namespace)):
        raise BadRequest("namespace must be 1-64 letters, digits, '_' or '-'", param="namespace")
    return {"tenant": tenant, "namespace": namespace, "key_prefix": None}


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _model_of(raw: bytes) -> str | None:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _static(name: str) -> str:
    return resources.files("semcache._gateway").joinpath("static", name).read_text(encoding="utf-8")


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


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` answering any unexpected error with a 500 in OpenAI's shape, the traceback only in the log."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - the server never dies on a request, and never shows a traceback
            log.exception("semcache gateway: unexpected error on %s %s", request.method, request.url.path)
            return _error(500, "internal error in the gateway (see its log)", "server_error", code="internal")

    return guarded


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI application serving ``gateway``."""
    g = gateway
    routes = [
        Route("/v1/chat/completions", _guarded(g.cached), methods=["POST"]),
        Route("/v1/responses", _guarded(g.cached), methods=["POST"]),
        Route("/v1/semcache/feedback", _guarded(g.feedback), methods=["POST"]),
        Route("/v1/{path:path}", _guarded(g.passthrough), methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
        Route("/healthz", _guarded(g.healthz)),
        Route("/readyz", _guarded(g.readyz)),
        Route("/metrics", _guarded(g.prometheus)),
        Route("/admin/stats", _guarded(g.admin_stats)),
        Route("/admin/recent", _guarded(g.admin_recent)),
        Route("/admin/report", _guarded(g.admin_report), methods=["POST"]),
        Route("/admin/invalidate", _guarded(g.admin_invalidate), methods=["POST"]),
        Route("/dashboard", _guarded(g.dashboard)),
        Route("/dashboard/login", _guarded(g.dashboard_login), methods=["POST"]),
        Route("/dashboard/static/{name}", _guarded(g.dashboard_asset)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()  # after uvicorn finished the requests in flight: pending stores land, then close

    return Starlette(routes=routes, lifespan=lifespan)
