"""Running the gateway: uvicorn on the configured address, a demo set-up, and a clean stop on SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets the
requests in flight finish (up to :data:`GRACEFUL_SECONDS`); then the app's
lifespan ends, which waits for the pending stores and closes the cache.
"""

from __future__ import annotations

import io
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TextIO

from semcache.errors import ConfigurationError

from .app import Gateway, create_app
from .caching import GatewayCache, build_cache
from .config import CacheSettings, GatewayConfig, ServerSettings, Tenant, Upstream, hash_key, new_key

__all__ = ["GRACEFUL_SECONDS", "DemoGateway", "demo_config", "demo_gateway", "running", "serve"]

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


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (bound here, not by uvicorn, so the real port of port 0 can be printed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    # create_server leaves the socket's proto 0, and asyncio sets TCP_NODELAY only on connections whose socket says
    # IPPROTO_TCP: without it every keep-alive answer (headers, then body) waits ~40 ms for a delayed ACK.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=listener.detach())


@dataclass(frozen=True)
class DemoGateway:
    """A running demo gateway: its ``base_url`` (``.../v1``), the tenants' keys and the admin key."""

    base_url: str
    keys: dict[str, str]
    admin_key: str


@contextmanager
def running(config: GatewayConfig) -> Iterator[str]:
    """Run the gateway in a background thread of this process; yields its root URL (``http://127.0.0.1:PORT``).

    For tests and examples: ``semcache serve`` is the way to run it in production.
    """
    import uvicorn

    gateway = Gateway(config, GatewayCache(build_cache(config.cache)))
    sock = listen(config.server.host, config.server.port)
    server = uvicorn.Server(uvicorn.Config(create_app(gateway), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="semcache-gateway", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        if not server.started:
            raise ConfigurationError("the gateway did not start (see the log)")
        yield f"http://{config.server.host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@contextmanager
def demo_gateway(*, embedding: str | None = None) -> Iterator[DemoGateway]:
    """The demo gateway in this process, with the bundled OpenAI-compatible server as its upstream."""
    keys = io.StringIO()
    with demo_upstream() as base_url:
        config = demo_config(base_url, embedding=embedding, out=keys)
        printed = dict(line.rsplit(" key ", 1) for line in keys.getvalue().splitlines())
        tenants = {name.removeprefix("tenant "): key for name, key in printed.items() if name.startswith("tenant ")}
        config = replace(config, server=replace(config.server, port=0))
        with running(config) as root:
            yield DemoGateway(f"{root}/v1", tenants, printed["admin"])


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
    sock = listen(server.host, server.port)
    print(f"semcache gateway listening on http://{server.host}:{sock.getsockname()[1]}", flush=True)
    settings = uvicorn.Config(create_app(gateway), log_level="info", access_log=False, lifespan="on",
                              timeout_graceful_shutdown=GRACEFUL_SECONDS)
    # uvicorn handles SIGTERM/SIGINT while it runs, then re-raises the signal to the handler found before it:
    # a no-op here, so a graceful stop ends with exit status 0 rather than death by the signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    uvicorn.Server(settings).run(sockets=[sock])
