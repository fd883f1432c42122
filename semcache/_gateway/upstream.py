"""Calls to the upstream providers, with httpx: one pooled async client, streaming included.

Upstream errors pass through as the upstream sent them (status, body, content
type); a timeout becomes a 504 and a refused connection a 502, each with an
OpenAI-style error body (:func:`error_body`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from .config import Upstream

__all__ = ["HOP_BY_HOP", "UpstreamFailure", "Upstreams", "error_body"]

# Headers that describe one connection, not the message: never forwarded either way.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "authorization",
})
# The client's own headers the gateway reads; not sent on (x-semcache-* and the cache controls).
_GATEWAY_HEADERS = ("x-semcache-", "cache-control")


def error_body(message: str, kind: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class UpstreamFailure(Exception):
    """The upstream could not be reached or did not answer in time: the status and body to answer with."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, "upstream_error", code=code)


def forwarded_headers(headers: Mapping[str, str], key: str | None) -> dict[str, str]:
    """The client's headers to send upstream: without hop-by-hop and gateway headers, with the upstream's key."""
    out = {name: value for name, value in headers.items()
           if name.lower() not in HOP_BY_HOP and not name.lower().startswith(_GATEWAY_HEADERS)}
    out.pop("accept-encoding", None)  # the relay passes bytes through: ask for them unencoded
    if key:
        out["authorization"] = f"Bearer {key}"
    return out


class Upstreams:
    """The pooled HTTP client every upstream call goes through."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        # No overall timeout here: each call sets its upstream's; the pool is sized for a busy gateway.
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        self._client = httpx.AsyncClient(limits=limits, transport=transport, follow_redirects=False)

    async def open(
        self, upstream: Upstream, method: str, path: str, *, headers: Mapping[str, str], body: bytes | None,
        query: str = "", key: str | None = None,
    ) -> httpx.Response:
        """Send a request and return the response with its body not yet read (the caller streams or reads it).

        Args:
            path: the part after ``/v1`` (``/chat/completions``).
            key: the key to present (the upstream's own, or a pass-through client's).

        Raises:
            UpstreamFailure: a timeout (504) or a connection failure (502).
        """
        url = upstream.base_url + path + (f"?{query}" if query else "")
        request = self._client.build_request(
            method, url, headers=forwarded_headers(headers, key or upstream.api_key()), content=body,
            timeout=httpx.Timeout(upstream.timeout, connect=min(upstream.timeout, 10.0)),
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamFailure(504, f"upstream {upstream.name} did not answer within {upstream.timeout:g} s",
                                  "upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(502, f"upstream {upstream.name} is unreachable: {type(exc).__name__}",
                                  "upstream_unreachable") from None

    async def read(self, response: httpx.Response, upstream: Upstream) -> bytes:
        """The whole body of ``response`` (then closed).

        Raises:
            UpstreamFailure: it stopped answering mid-body (504) or broke off (502).
        """
        try:
            return await response.aread()
        except httpx.TimeoutException:
            raise UpstreamFailure(504, f"upstream {upstream.name} stopped answering within {upstream.timeout:g} s",
                                  "upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(502, f"upstream {upstream.name} broke off: {type(exc).__name__}",
                                  "upstream_unreachable") from None
        finally:
            await response.aclose()

    async def pieces(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body of ``response`` as it arrives (closed at the end, or when the reader stops)."""
        try:
            async for piece in response.aiter_raw():
                yield piece
        finally:
            await response.aclose()

    async def reachable(self, upstream: Upstream) -> bool:
        """Whether the upstream answers HTTP at all (any status: a 401 still proves it is there)."""
        try:
            response = await self._client.get(upstream.base_url + "/models", timeout=3.0,
                                              headers=forwarded_headers({}, upstream.api_key()))
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def close(self) -> None:
        await self._client.aclose()


def response_headers(response: httpx.Response) -> dict[str, str]:
    """The upstream's response headers to pass back to the client."""
    return {name: value for name, value in response.headers.items() if name.lower() not in HOP_BY_HOP}
