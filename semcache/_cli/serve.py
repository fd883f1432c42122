"""``semcache serve``: run the OpenAI-compatible caching gateway (:mod:`semcache._gateway`).

    semcache serve --config gateway.toml            # as configured
    semcache serve --demo                           # offline: the bundled upstream, two tenants, printed keys
    semcache serve --hash-key sk-...                # print the hash a config stores for a key
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from semcache.errors import ConfigurationError, missing_extra

__all__ = ["add_serve_command"]


def add_serve_command(subparsers: Any) -> None:
    """Add ``serve`` to the ``semcache`` argument parser's subcommands."""
    serve = subparsers.add_parser(
        "serve", help="run the OpenAI-compatible caching gateway",
        description="Serve /v1/chat/completions and /v1/responses from the cache, pass every other /v1/ call "
                    "through, with tenants, Prometheus metrics and a dashboard (docs/guides/gateway.md).",
    )
    serve.add_argument("--config", help="the gateway's TOML file (see examples/gateway.toml)")
    serve.add_argument("--host", default=None, help="address to bind (default: the config's, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: the config's, else 8080; 0: any)")
    serve.add_argument("--demo", action="store_true",
                       help="no config needed: the bundled OpenAI-compatible server upstream, two tenants and an "
                            "admin key, printed as 'tenant NAME key KEY' and 'admin key KEY'")
    serve.add_argument("--embedding", default=None,
                       help='with --demo: the embedding model (default: the packaged MiniLM; "hash:DIM" for tests)')
    serve.add_argument("--hash-key", metavar="KEY", default=None,
                       help="print the sha256 hash of KEY, as a config stores it, and exit")
    serve.add_argument("--new-key", action="store_true", help="print a fresh random key and its hash, and exit")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway (until SIGTERM or Ctrl-C), or print a key's hash."""
    try:
        from semcache._gateway.config import GatewayConfig, hash_key, new_key
        from semcache._gateway.server import demo_config, demo_upstream, serve
    except ImportError as exc:
        raise missing_extra(exc.name or "starlette", "gateway", "semcache serve") from exc
    if args.hash_key is not None:
        print(hash_key(args.hash_key))
        return 0
    if args.new_key:
        key = new_key()
        print(f"key {key}\nhash {hash_key(key)}")
        return 0
    if args.demo == bool(args.config):
        raise ConfigurationError("give --config FILE or --demo (one of them)")
    if args.demo:
        with demo_upstream() as base_url:
            print(f"upstream {base_url} (the bundled OpenAI-compatible server)", file=sys.stdout)
            serve(demo_config(base_url, embedding=args.embedding), host=args.host, port=args.port)
        return 0
    serve(GatewayConfig.load(args.config), host=args.host, port=args.port)
    return 0
