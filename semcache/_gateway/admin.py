"""Health, metrics, the admin endpoints, wrong-hit feedback and the dashboard."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .caching import tenant_of_key
from .config import NAME
from .requests import BadRequest, parse_body
from .state import COOKIE, Gateway, TooLarge, error_response, same, unauthorized

__all__ = ["AdminEndpoints"]

log = logging.getLogger("semcache.gateway")


class AdminEndpoints:
    """Everything but the OpenAI API: health, ``/metrics``, ``/admin/*``, feedback and ``/dashboard``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/semcache/feedback`` ``{"key": ...}``: a tenant reports one of its hits wrong."""
        caller = self.gateway.caller_of(request)
        if caller is None:
            return unauthorized()
        key = await self._key_field(request)
        if isinstance(key, Response):
            return key
        if tenant_of_key(key) != caller.tenant.name:
            return error_response(404, "no such cache entry for this key", code="not_found", param="key")
        return await self.gateway.report(key)

    async def _key_field(self, request: Request) -> str | Response:
        try:
            body = parse_body(await self.gateway.read_body(request))
        except TooLarge:
            return self.gateway.too_large()
        except BadRequest as exc:
            return error_response(400, str(exc))
        key = body.get("key")
        if not isinstance(key, str) or tenant_of_key(key) is None:
            return error_response(400, "key must be the x-semcache-key of a gateway answer", param="key")
        return key

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 when the cache and every upstream answer; 503 naming what does not."""
        checks: dict[str, bool] = {}
        try:
            await anyio.to_thread.run_sync(self.gateway.cache.size)
            checks["cache"] = True
        except Exception:  # noqa: BLE001 - not ready is the answer
            checks["cache"] = False
        for upstream in self.gateway.config.upstreams:
            checks[f"upstream:{upstream.name}"] = await self.gateway.upstreams.reachable(upstream)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def prometheus(self, request: Request) -> Response:
        denied = self.gateway.admin_denied(request)
        if denied is not None:
            return denied
        await self.gateway.refresh_size()
        # Off the event loop: the store's collector asks the backend (a cluster: over the network).
        text = await anyio.to_thread.run_sync(self.gateway.metrics.exposition)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def admin_stats(self, request: Request) -> Response:
        denied = self.gateway.admin_denied(request)
        if denied is not None:
            return denied
        snapshot = self.gateway.metrics.snapshot()
        size = await self.gateway.refresh_size()
        snapshot["cache"] = None if size is None else {"entries": size[0], "value_bytes": size[1]}
        return JSONResponse(snapshot)

    async def admin_recent(self, request: Request) -> Response:
        denied = self.gateway.admin_denied(request)
        return denied or JSONResponse({"recent_hits": self.gateway.metrics.snapshot()["recent_hits"]})

    async def admin_report(self, request: Request) -> Response:
        denied = self.gateway.admin_denied(request)
        if denied is not None:
            return denied
        key = await self._key_field(request)
        return key if isinstance(key, Response) else await self.gateway.report(key)

    async def admin_invalidate(self, request: Request) -> Response:
        """``POST /admin/invalidate`` with ``{"tenant"[, "namespace"]}`` or ``{"key_prefix"}``."""
        denied = self.gateway.admin_denied(request)
        if denied is not None:
            return denied
        try:
            body = parse_body(await self.gateway.read_body(request))
            target = _invalidation(body)
        except TooLarge:
            return self.gateway.too_large()
        except BadRequest as exc:
            return error_response(400, str(exc), param=exc.param)
        try:
            deleted = await anyio.to_thread.run_sync(lambda: self.gateway.cache.invalidate(**target))
        except Exception as exc:  # noqa: BLE001
            log.warning("semcache gateway: invalidation failed: %s", exc)
            return error_response(503, "the cache is unreachable", "server_error", code="cache_unavailable")
        return JSONResponse({"deleted": deleted, **target})

    # ------------------------------------------------------------ dashboard
    async def dashboard(self, request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        page = "dashboard.html" if cookie and same(cookie, self.gateway.keys.dashboard_cookie()) else "login.html"
        return HTMLResponse(_static(page))

    async def dashboard_login(self, request: Request) -> Response:
        try:  # a urlencoded form of one field, read here rather than with another dependency (python-multipart)
            form = parse_qs((await self.gateway.read_body(request)).decode("utf-8", "replace"), max_num_fields=4)
        except (TooLarge, ValueError):
            form = {}
        key = (form.get("key") or [""])[0]
        if not isinstance(key, str) or not self.gateway.keys.is_admin(key):
            return HTMLResponse(_static("login.html").replace("<!--error-->", "<p id='login-error'>Wrong key.</p>"),
                                status_code=401)
        response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(COOKIE, self.gateway.keys.dashboard_cookie(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def dashboard_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("dashboard.js", "dashboard.css"):
            return error_response(404, "no such file", code="not_found")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_static(name), media_type=media)


def _invalidation(body: dict[str, Any]) -> dict[str, Any]:
    tenant, namespace, prefix = body.get("tenant"), body.get("namespace"), body.get("key_prefix")
    if prefix is not None:
        if tenant is not None or namespace is not None or not isinstance(prefix, str) \
                or not prefix.startswith("gw."):
            raise BadRequest("key_prefix must be a string starting with 'gw.', given alone", param="key_prefix")
        return {"tenant": None, "namespace": None, "key_prefix": prefix}
    if not isinstance(tenant, str) or not NAME.match(tenant):
        raise BadRequest("give tenant (and optionally namespace) or key_prefix", param="tenant")
    if namespace is not None and (not isinstance(namespace, str) or not NAME.match(namespace)):
        raise BadRequest("namespace must be 1-64 letters, digits, '_' or '-'", param="namespace")
    return {"tenant": tenant, "namespace": namespace, "key_prefix": None}


def _static(name: str) -> str:
    return resources.files("semcache._gateway").joinpath("static", name).read_text(encoding="utf-8")
