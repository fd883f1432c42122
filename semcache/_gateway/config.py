"""The gateway's settings: read from a TOML file, checked field by field, held in frozen records.

Every mistake is a :class:`~semcache.errors.ConfigurationError` naming the
field (``tenants[1].key_hashes[0]: ...``), raised when the file is loaded,
never on the first request.  Client keys are stored as hashes
(:func:`hash_key`): the file never holds a key in plain text.

>>> config = GatewayConfig.from_dict({
...     "upstreams": [{"name": "local", "base_url": "http://127.0.0.1:9/v1"}],
...     "tenants": [{"name": "team-a", "key_hashes": [hash_key("sk-team-a")]}],
... })
>>> config.tenants[0].name, config.upstream_for("gpt-4o-mini").name
('team-a', 'local')
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semcache.errors import ConfigurationError

__all__ = [
    "DEFAULT_PRICES",
    "CacheSettings",
    "GatewayConfig",
    "Passthrough",
    "ServerSettings",
    "Tenant",
    "Upstream",
    "hash_key",
    "new_key",
]

# Tenant and namespace names become part of the cache's key prefixes ("gw.<tenant>.<namespace>/..."),
# so they may not hold the separators "." and "/".
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any chat request, far below what hurts the process
# USD per million tokens (input, output), matched by the longest model-name prefix; [prices] in the file overrides.
DEFAULT_PRICES: Mapping[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}


def hash_key(key: str) -> str:
    """The form a client key is stored in: ``sha256:<hex>``.

    Keys are random tokens of 128 bits or more (:func:`new_key`), so an unsalted
    digest is enough: there is nothing to guess from it.

    >>> hash_key("sk-x")[:14]
    'sha256:9df37f5'
    """
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(prefix: str = "sk-semcache-") -> str:
    """A fresh random key (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible provider the gateway forwards to.

    Attributes:
        name: how logs and metrics name it.
        base_url: up to and including ``/v1`` (``https://api.openai.com/v1``).
        api_key_env: the environment variable holding its key (None: send the client's key on).
        timeout: seconds to wait for its answer (for a stream: for each piece of it).
        models: model-name prefixes it serves; ``"*"`` serves every model no other upstream claims.
    """

    name: str
    base_url: str
    api_key_env: str | None = None
    timeout: float = 60.0
    models: tuple[str, ...] = ("*",)

    def api_key(self) -> str | None:
        """Its key, read from the environment when a request goes out (rotating it needs no restart)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class Tenant:
    """A client of the gateway: a hard scope of the cache, reached by any of its keys.

    Attributes:
        name: letters, digits, ``_`` and ``-``.
        key_hashes: :func:`hash_key` of each key it may use.
        max_wrong_rate: the verifier's operating point (a rate or preset); None: the cache's.
        threshold: a cosine threshold instead of the verifier.
        ttl: seconds its answers stay cached (None: the cache's default).
        sampling: ``"deterministic"`` caches only requests with temperature unset or 0; ``"all"`` caches every one.
        speculative_upstream: call the upstream while the semantic lookup runs, and cancel the call on a
            hit: a miss then waits for no lookup, but the provider may bill the cancelled calls.
    """

    name: str
    key_hashes: tuple[str, ...] = ()
    max_wrong_rate: float | str | None = None
    threshold: float | None = None
    ttl: float | None = None
    sampling: str = "deterministic"
    speculative_upstream: bool = False


@dataclass(frozen=True)
class Passthrough:
    """Forward clients' own provider keys; the tenant is a keyed hash of the key.

    Attributes:
        enabled: accept keys that are not in the tenant table.
        secret_env: the environment variable holding the hashing secret; without it
            a random secret per process (tenants then last only as long as the process).
    """

    enabled: bool = False
    secret_env: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    """Where the gateway listens and what it accepts.

    Attributes:
        host: the address to bind; anything but loopback needs ``allow_remote``.
        allow_remote: accept a non-loopback ``host``.
        port: the TCP port.
        max_body_bytes: larger request bodies get a 413 before they are read.
        admin_key_hashes: :func:`hash_key` of the keys that open the admin endpoints and the dashboard.
        recent_hits: how many recent hits the admin endpoint and the dashboard keep.
    """

    host: str = "127.0.0.1"
    allow_remote: bool = False
    port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    admin_key_hashes: tuple[str, ...] = ()
    recent_hits: int = 200


@dataclass(frozen=True)
class CacheSettings:
    """The cache behind the gateway.

    Attributes:
        path: a directory the embedded store persists in (None: in memory).
        cluster: a cluster file (``semcache cluster up`` writes one): the cache lives in the cluster.
        embedding: the model (default: the packaged all-MiniLM-L6-v2; ``"hash:DIM"`` for tests).
        ttl: default seconds an answer stays cached (None: until evicted).
        max_wrong_rate: the verifier's default operating point for every tenant.
    """

    path: str | None = None
    cluster: str | None = None
    embedding: str | None = None
    ttl: float | None = None
    max_wrong_rate: float | str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    """Everything ``semcache serve`` runs with."""

    upstreams: tuple[Upstream, ...]
    tenants: tuple[Tenant, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    passthrough: Passthrough = field(default_factory=Passthrough)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GatewayConfig:
        """Read a TOML config file.

        Raises:
            ConfigurationError: the file is missing, not TOML, or a field is wrong (named).
        """
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read gateway config {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"gateway config {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Build and check a config from parsed TOML (see :meth:`load`)."""
        _only(data, "config", {"server", "cache", "upstreams", "tenants", "passthrough", "prices"})
        upstreams = tuple(_upstream(u, f"upstreams[{i}]") for i, u in enumerate(_list(data, "upstreams", "config")))
        if not upstreams:
            raise ConfigurationError("config: at least one [[upstreams]] is needed")
        tenants = tuple(_tenant(t, f"tenants[{i}]") for i, t in enumerate(_list(data, "tenants", "config")))
        config = cls(
            upstreams=upstreams,
            tenants=tenants,
            server=_server(_table(data, "server", "config")),
            cache=_cache(_table(data, "cache", "config")),
            passthrough=_passthrough(_table(data, "passthrough", "config")),
            prices={**DEFAULT_PRICES, **_prices(_table(data, "prices", "config"))},
        )
        config.check()
        return config

    def check(self) -> None:
        """Cross-field checks: unique names, no key shared by two tenants, a reachable host.

        Raises:
            ConfigurationError: naming the conflict.
        """
        _unique([u.name for u in self.upstreams], "upstreams", "name")
        _unique([t.name for t in self.tenants], "tenants", "name")
        _unique([h for t in self.tenants for h in t.key_hashes], "tenants", "key hash")
        if not self.tenants and not self.passthrough.enabled:
            raise ConfigurationError("config: no [[tenants]] and passthrough off: no client could authenticate")
        if not self.server.allow_remote and self.server.host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigurationError(
                f"server.host {self.server.host!r} is not loopback: set server.allow_remote = true to listen on it"
            )

    def upstream_for(self, model: str) -> Upstream | None:
        """The upstream serving ``model``: the longest matching prefix, else the ``"*"`` one, else None."""
        best: tuple[int, Upstream] | None = None
        for upstream in self.upstreams:
            for prefix in upstream.models:
                if prefix != "*" and model.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), upstream)
        if best is not None:
            return best[1]
        return next((u for u in self.upstreams if "*" in u.models), None)

    def price_of(self, model: str) -> tuple[float, float] | None:
        """USD per million (input, output) tokens of ``model``, by the longest matching prefix."""
        matches = [prefix for prefix in self.prices if model.startswith(prefix)]
        return self.prices[max(matches, key=len)] if matches else None


# ------------------------------------------------------------------ sections
def _upstream(raw: Any, where: str) -> Upstream:
    table = _mapping(raw, where)
    _only(table, where, {"name", "base_url", "api_key_env", "timeout", "models"})
    base_url = _str(table, "base_url", where, required=True)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}.base_url must start with http:// or https://, got {base_url!r}")
    models = tuple(_strings(table, "models", where) or ("*",))
    return Upstream(
        name=_name(_str(table, "name", where, required=True), f"{where}.name"),
        base_url=base_url.rstrip("/"),
        api_key_env=_str(table, "api_key_env", where),
        timeout=_seconds(table.get("timeout", 60.0), f"{where}.timeout"),
        models=models,
    )


def _tenant(raw: Any, where: str) -> Tenant:
    table = _mapping(raw, where)
    _only(table, where, {"name", "key_hashes", "max_wrong_rate", "threshold", "ttl", "sampling",
                         "speculative_upstream"})
    hashes = tuple(_key_hash(h, f"{where}.key_hashes[{i}]") for i, h in enumerate(_strings(table, "key_hashes", where)))
    sampling = table.get("sampling", "deterministic")
    if sampling not in ("deterministic", "all"):
        raise ConfigurationError(f"{where}.sampling must be 'deterministic' or 'all', got {sampling!r}")
    if table.get("threshold") is not None and table.get("max_wrong_rate") is not None:
        raise ConfigurationError(f"{where}: give threshold or max_wrong_rate, not both")
    return Tenant(
        name=_name(_str(table, "name", where, required=True), f"{where}.name"),
        key_hashes=hashes,
        max_wrong_rate=_wrong_rate(table.get("max_wrong_rate"), f"{where}.max_wrong_rate"),
        threshold=_cosine(table.get("threshold"), f"{where}.threshold"),
        ttl=None if table.get("ttl") is None else _seconds(table["ttl"], f"{where}.ttl"),
        sampling=sampling,
        speculative_upstream=_bool(table.get("speculative_upstream", False), f"{where}.speculative_upstream"),
    )


def _server(table: Mapping[str, Any]) -> ServerSettings:
    where = "server"
    _only(table, where, {"host", "port", "allow_remote", "max_body_bytes", "admin_key_hashes", "recent_hits"})
    defaults = ServerSettings()
    return ServerSettings(
        host=_str(table, "host", where) or defaults.host,
        allow_remote=_bool(table.get("allow_remote", False), f"{where}.allow_remote"),
        port=_int(table.get("port", defaults.port), f"{where}.port", 0, 65535),
        max_body_bytes=_int(table.get("max_body_bytes", defaults.max_body_bytes), f"{where}.max_body_bytes",
                            1024, 64 << 20),
        admin_key_hashes=tuple(_key_hash(h, f"{where}.admin_key_hashes[{i}]")
                               for i, h in enumerate(_strings(table, "admin_key_hashes", where))),
        recent_hits=_int(table.get("recent_hits", defaults.recent_hits), f"{where}.recent_hits", 0, 100_000),
    )


def _cache(table: Mapping[str, Any]) -> CacheSettings:
    where = "cache"
    _only(table, where, {"path", "cluster", "embedding", "ttl", "max_wrong_rate"})
    settings = CacheSettings(
        path=_str(table, "path", where),
        cluster=_str(table, "cluster", where),
        embedding=_str(table, "embedding", where),
        ttl=None if table.get("ttl") is None else _seconds(table["ttl"], f"{where}.ttl"),
        max_wrong_rate=_wrong_rate(table.get("max_wrong_rate"), f"{where}.max_wrong_rate"),
    )
    if settings.path and settings.cluster:
        raise ConfigurationError("cache: give path (the embedded store) or cluster (a cluster file), not both")
    return settings


def _passthrough(table: Mapping[str, Any]) -> Passthrough:
    _only(table, "passthrough", {"enabled", "secret_env"})
    return Passthrough(
        enabled=_bool(table.get("enabled", False), "passthrough.enabled"),
        secret_env=_str(table, "secret_env", "passthrough"),
    )


def _prices(table: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    prices = {}
    for model, pair in table.items():
        where = f"prices.{model}"
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigurationError(f"{where} must be [input, output] USD per million tokens, got {pair!r}")
        prices[model] = (_number(pair[0], f"{where}[0]"), _number(pair[1], f"{where}[1]"))
    return prices


# -------------------------------------------------------------- field checks
def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a table, got {type(raw).__name__}")
    return raw


def _table(data: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    return _mapping(data.get(name, {}), f"{where}.{name}" if where != "config" else name)


def _list(data: Mapping[str, Any], name: str, where: str) -> Sequence[Any]:
    raw = data.get(name, [])
    if not isinstance(raw, list):
        raise ConfigurationError(f"{name} must be an array of tables ([[{name}]]), got {type(raw).__name__}")
    return raw


def _str(table: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> Any:
    value = table.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}.{name} must be a non-empty string, got {value!r}")
    return value


def _strings(table: Mapping[str, Any], name: str, where: str) -> list[str]:
    value = table.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where}.{name} must be an array of non-empty strings, got {value!r}")
    return value


def _name(value: str, where: str) -> str:
    if not NAME.match(value):
        raise ConfigurationError(f"{where} must be 1-64 letters, digits, '_' or '-', got {value!r}")
    return value


def _key_hash(value: str, where: str) -> str:
    if not _HASH.match(value):
        raise ConfigurationError(
            f"{where} must be a key hash 'sha256:<64 hex digits>' (semcache serve --hash-key KEY prints one); "
            "keys are never stored in plain text"
        )
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where} must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str, lowest: int, highest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ConfigurationError(f"{where} must be a whole number in [{lowest}, {highest}], got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{where} must be a number >= 0, got {value!r}")
    return float(value)


def _seconds(value: Any, where: str) -> float:
    seconds = _number(value, where)
    if seconds <= 0:
        raise ConfigurationError(f"{where} must be a number of seconds > 0, got {value!r}")
    return seconds


def _cosine(value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = _number(value, where)
    if number > 1:
        raise ConfigurationError(f"{where} must be a cosine similarity in [0, 1], got {value!r}")
    return number


def _wrong_rate(value: Any, where: str) -> float | str | None:
    if value is None:
        return None
    from semcache._cache.decision import wrong_rate_of

    try:
        wrong_rate_of(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except ValueError as exc:  # InvalidInputError: not a number at all
        raise ConfigurationError(f"{where}: {exc}") from exc
    return value


def _unique(values: Sequence[str], section: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            shown = value if what == "name" else value[:15] + "..."
            raise ConfigurationError(f"{section}: the {what} {shown!r} appears twice")
        seen.add(value)
