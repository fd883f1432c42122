"""What the gateway's endpoints share: its state (:class:`Gateway`) and the answers every endpoint may give."""

from __future__ import annotations

import hmac
import logging

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from semcache._cache.cache import CacheHit
from semcache._cache.decision import DEFAULT_MAX_WRONG_RATE, wrong_rate_of
from semcache.metrics import register

from .auth import Caller, KeyTable, bearer_key
from .caching import GatewayCache, tenant_of_key
from .config import GatewayConfig, Tenant
from .metrics import GatewayMetrics
from .upstream import Upstreams, error_body

__all__ = ["COOKIE", "Gateway", "TooLarge", "error_response", "unauthorized"]

log = logging.getLogger("semcache.gateway")
COOKIE = "semcache_dashboard"


def error_response(status: int, message: str, kind: str = "invalid_request_error", *, code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape."""
    return JSONResponse(error_body(message, kind, code=code, param=param), status_code=status)


def unauthorized() -> JSONResponse:
    """The answer to a missing or unknown key."""
    return error_response(401, "missing or unknown API key: send Authorization: Bearer <your gateway key>",
                          "invalid_request_error", code="invalid_api_key")


class TooLarge(Exception):
    """A request body over the configured limit."""


def same(a: str, b: str) -> bool:
    """Constant-time string equality."""
    return hmac.compare_digest(a.encode(), b.encode())


class Gateway:
    """What every endpoint shares: the config, the keys, the cache, the upstream client and the metrics."""

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
        self._recent_hits: dict[str, CacheHit] = {}  # by key: the pair a wrong-hit report records
        for tenant in config.tenants:
            cache.check_tenant(tenant)
        # /metrics also carries the cache's own counters and its store's figures, as semcache.metrics exports them.
        register(cache.cache, registry=self.metrics.registry)

    # ------------------------------------------------------------ reading a request
    async def read_body(self, request: Request) -> bytes:
        """The request body, refused (:class:`TooLarge`) as soon as it passes ``max_body_bytes``."""
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def too_large(self) -> JSONResponse:
        """The 413 for a body over the limit."""
        limit = self.config.server.max_body_bytes
        return error_response(413, f"the request body is over the gateway's limit of {limit} bytes",
                              code="request_too_large")

    def caller_of(self, request: Request) -> Caller | None:
        """The tenant behind the request's bearer key, or None (a 401)."""
        return self.keys.caller(bearer_key(request.headers), self.default_tenant)

    def remember_hit(self, hit: CacheHit) -> None:
        """Keep a served hit's pair (bounded), so a report of its key records the labelled pair."""
        self._recent_hits[hit.key] = CacheHit(None, hit.similarity, hit.cached_prompt, hit.key, {}, hit.exact,
                                              hit.prompt, hit.score)
        while len(self._recent_hits) > max(self.config.server.recent_hits, 1):
            self._recent_hits.pop(next(iter(self._recent_hits)))

    async def report(self, key: str) -> Response:
        """Report the entry ``key`` wrong: deleted, counted, and its pair recorded when the hit is recent."""
        hit = self._recent_hits.pop(key, None)
        try:
            deleted = await anyio.to_thread.run_sync(self.cache.report_wrong_hit, key, hit)
        except Exception as exc:  # noqa: BLE001 - a cluster down: say so, keep serving
            log.warning("semcache gateway: a wrong-hit report failed: %s", exc)
            return error_response(503, "the cache is unreachable; report again later", "server_error",
                                  code="cache_unavailable")
        self.metrics.wrong_hit(str(tenant_of_key(key)))
        self.metrics.forget_recent(key)
        return JSONResponse({"key": key, "deleted": bool(deleted)})

    # ------------------------------------------------------------ health and metrics
    async def refresh_size(self) -> tuple[int, int] | None:
        """Read the cache's entries and bytes into the gauges; None when the cache does not answer."""
        try:
            entries, size = await anyio.to_thread.run_sync(self.cache.size)
        except Exception:  # noqa: BLE001 - the gauges keep their last value
            return None
        self.metrics.entries.set(entries)
        self.metrics.bytes.set(size)
        return entries, size

    # ------------------------------------------------------------ admin
    def admin_denied(self, request: Request) -> Response | None:
        """None when the request holds the admin key (bearer or dashboard cookie), else the 401/403."""
        if not self.keys.has_admin():
            return error_response(403, "no admin key is configured (server.admin_key_hashes)", code="admin_disabled")
        cookie = request.cookies.get(COOKIE)
        if self.keys.is_admin(bearer_key(request.headers)) or (cookie and same(cookie, self.keys.dashboard_cookie())):
            return None
        return error_response(401, "this endpoint needs the admin key: Authorization: Bearer <admin key>",
                              code="invalid_api_key")

    async def close(self) -> None:
        """Finish pending stores, then close the upstream client and the cache."""
        await self.cache.drain()
        await self.upstreams.close()
        await anyio.to_thread.run_sync(self.cache.close)
