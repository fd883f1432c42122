"""The gateway's HTTP application (Starlette): the routes of :class:`~.serving.CachedEndpoints` and
:class:`~.admin.AdminEndpoints` over one :class:`~.state.Gateway`.

No traceback ever reaches a caller: an unexpected error is logged and answered
with a 500 in OpenAI's error shape.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin import AdminEndpoints
from .serving import CachedEndpoints
from .state import Gateway, error_response

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("semcache.gateway")


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` answering any unexpected error with a 500 in OpenAI's shape, the traceback only in the log."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - the server never dies on a request, and never shows a traceback
            log.exception("semcache gateway: unexpected error on %s %s", request.method, request.url.path)
            return error_response(500, "internal error in the gateway (see its log)", "server_error", code="internal")

    return guarded


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI application serving ``gateway``."""
    api, admin = CachedEndpoints(gateway), AdminEndpoints(gateway)
    routes = [
        Route("/v1/chat/completions", _guarded(api.cached), methods=["POST"]),
        Route("/v1/responses", _guarded(api.cached), methods=["POST"]),
        Route("/v1/semcache/feedback", _guarded(admin.feedback), methods=["POST"]),
        Route("/v1/{path:path}", _guarded(api.passthrough), methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
        Route("/healthz", _guarded(admin.healthz)),
        Route("/readyz", _guarded(admin.readyz)),
        Route("/metrics", _guarded(admin.prometheus)),
        Route("/admin/stats", _guarded(admin.admin_stats)),
        Route("/admin/recent", _guarded(admin.admin_recent)),
        Route("/admin/report", _guarded(admin.admin_report), methods=["POST"]),
        Route("/admin/invalidate", _guarded(admin.admin_invalidate), methods=["POST"]),
        Route("/dashboard", _guarded(admin.dashboard)),
        Route("/dashboard/login", _guarded(admin.dashboard_login), methods=["POST"]),
        Route("/dashboard/static/{name}", _guarded(admin.dashboard_asset)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()  # after uvicorn finished the requests in flight: pending stores land, then close

    return Starlette(routes=routes, lifespan=lifespan)
