"""Running the gateway: uvicorn on the configured address, a demo set-up, and a clean stop on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the
requests in flight finish (up to :data:`GRACEFUL_SECONDS`); then the app's
lifespan ends, which waits for the pending stores and closes the cache.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TextIO

from .app import Gateway, create_app
from .caching import GatewayCache, build_cache
from .config import CacheSettings, GatewayConfig, ServerSettings, Tenant, Upstream, hash_key, new_key

__all__ = ["GRACEFUL_SECONDS", "demo_config", "serve"]

GRACEFUL_SECONDS = 30
DEMO_TENANTS = ("alpha", "beta")


def demo_config(base_url: str, *, embedding: str | None = None, out: TextIO = sys.stdout) -> GatewayConfig:
    """A config with two tenants and an admin key, all fresh; prints ``tenant NAME key KEY`` and ``admin key KEY``.

    Args:
        base_url: the bundled OpenAI-compatible server's ``.../v1``.
        embedding: the model (default: the packaged MiniLM).
    """
    tenants = []
    for name in DEMO_TENANTS:
        key = new_key()
        print(f"tenant {name} key {key}", file=out)
        tenants.append(Tenant(name, (hash_key(key),)))
    admin = new_key("sk-admin-")
    print(f"admin key {admin}", file=out, flush=True)
    return GatewayConfig(
        upstreams=(Upstream("demo", base_url),),
        tenants=tuple(tenants),
        server=ServerSettings(admin_key_hashes=(hash_key(admin),)),
        cache=CacheSettings(embedding=embedding),
    )


@contextmanager
def demo_upstream() -> Iterator[str]:
    """The bundled OpenAI-compatible server, started for the demo; yields its base URL."""
    from semcache.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server.base_url


def serve(config: GatewayConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway until SIGTERM or Ctrl-C.

    Raises:
        ConfigurationError: a bad setting (the cache, a tenant's operating point, the address).
    """
    import uvicorn

    server = replace(config.server, host=host or config.server.host,
                     port=config.server.port if port is None else port)
    config = replace(config, server=server)
    config.check()
    gateway = Gateway(config, GatewayCache(build_cache(config.cache)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # at INFO it logs a line for every upstream call
    # The socket is bound here, not by uvicorn, so the real port (of --port 0) can be printed for scripts.
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    listener = socket.create_server((server.host, server.port), family=family)
    # create_server leaves the socket's proto 0, and asyncio sets TCP_NODELAY only on connections whose socket says
    # IPPROTO_TCP: without it every keep-alive answer (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=listener.detach())
    print(f"semcache gateway listening on http://{server.host}:{sock.getsockname()[1]}", flush=True)
    settings = uvicorn.Config(create_app(gateway), log_level="info", access_log=False, lifespan="on",
                              timeout_graceful_shutdown=GRACEFUL_SECONDS)
    uvicorn.Server(settings).run(sockets=[sock])
