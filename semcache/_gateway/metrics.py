"""What the gateway counts: Prometheus metrics for scraping, and the tallies the dashboard reads.

Metrics live in the gateway's own :class:`prometheus_client.CollectorRegistry`
(two gateways in one process never share counters).  Labels are bounded:
``tenant`` takes the configured tenant names (every pass-through tenant is
``passthrough``), ``model`` the first :data:`MAX_MODELS` model names seen (the
rest are ``other``), so a client cannot grow the label set without limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics", "RecentHit", "Usage"]

MAX_MODELS = 32
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WINDOW = 2048  # latencies kept per (tenant, model, path) for the dashboard's percentiles
_BUCKET_SECONDS = 10  # the dashboard's hit-rate chart: one point per 10 s ...
_BUCKETS = 180  # ... over the last 30 minutes


@dataclass(frozen=True)
class Usage:
    """The tokens an answer cost when it was fetched: what a hit on it saves."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, usage: Any) -> Usage:
        """From a chat (``prompt_tokens``) or Responses (``input_tokens``) usage record; zero when absent."""
        if not isinstance(usage, dict):
            return cls()
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
        return cls(int(prompt) if isinstance(prompt, int) else 0, int(completion) if isinstance(completion, int) else 0)


@dataclass(frozen=True)
class RecentHit:
    """One served hit, as the dashboard's table shows it."""

    at: float
    tenant: str
    model: str
    prompt: str
    cached_prompt: str
    similarity: float
    score: float | None
    exact: bool
    key: str


@dataclass
class _Tally:
    """Counts of one (tenant, model) pair."""

    requests: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    errors: int = 0
    wrong_hit_reports: int = 0
    tokens_saved: int = 0
    money_saved: float = 0.0
    hit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    upstream_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-quantile (nearest rank) of ``values``, or None when there are none.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([], 0.99)
    (2.0, None)
    """
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered) - 1, int(round(q * len(ordered) + 0.5)) - 1))]


class GatewayMetrics:
    """The gateway's Prometheus metrics and the dashboard's tallies, updated together."""

    def __init__(
        self,
        tenants: Iterable[str],
        *,
        recent: int = 200,
        price_of: Callable[[str], tuple[float, float] | None] = lambda model: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenants = set(tenants)
        self._models: set[str] = set()
        self._price_of = price_of
        self._clock = clock
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._recent: deque[RecentHit] = deque(maxlen=max(recent, 1))
        self._series: deque[list[float]] = deque(maxlen=_BUCKETS)  # [bucket start, lookups, hits]
        labels = ("tenant", "model")
        r = self.registry
        self.requests = Counter("semcache_gateway_requests", "Requests to cached endpoints, by outcome",
                                (*labels, "endpoint", "outcome"), registry=r)
        self.hits = Counter("semcache_gateway_hits", "Answers served from the cache", (*labels, "kind"), registry=r)
        self.misses = Counter("semcache_gateway_misses", "Lookups that found nothing to serve", labels, registry=r)
        self.bypasses = Counter("semcache_gateway_bypasses", "Requests sent upstream without the cache",
                                (*labels, "reason"), registry=r)
        self.wrong_hits = Counter("semcache_gateway_wrong_hit_reports", "Hits reported wrong", ("tenant",),
                                  registry=r)
        self.upstream_errors = Counter("semcache_gateway_upstream_errors", "Upstream answers that were errors",
                                       ("upstream", "status"), registry=r)
        self.cache_errors = Counter("semcache_gateway_cache_errors", "Cache operations that failed (served uncached)",
                                    ("operation",), registry=r)
        self.tokens_saved = Counter("semcache_gateway_tokens_saved", "Tokens not billed thanks to hits", labels,
                                    registry=r)
        self.money_saved = Counter("semcache_gateway_money_saved_usd", "Estimated USD not spent thanks to hits",
                                   labels, registry=r)
        self.stores = Counter("semcache_gateway_stores", "Answers stored", labels, registry=r)
        self.lookup_seconds = Histogram("semcache_gateway_lookup_seconds", "Cache lookup time", labels,
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram("semcache_gateway_upstream_seconds", "Upstream call time",
                                          labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("semcache_gateway_request_seconds", "Time to answer, by outcome",
                                         (*labels, "outcome"), buckets=_LATENCY_BUCKETS, registry=r)
        self.entries = Gauge("semcache_gateway_cache_entries", "Entries in the cache", registry=r)
        self.bytes = Gauge("semcache_gateway_cache_bytes", "Bytes of stored values", registry=r)

    # ------------------------------------------------------------- labels
    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant in self._tenants else "passthrough"

    def model_label(self, model: str) -> str:
        with self._lock:
            if model in self._models:
                return model
            if len(self._models) < MAX_MODELS:
                self._models.add(model)
                return model
        return "other"

    def _tally(self, tenant: str, model: str) -> _Tally:
        key = (tenant, model)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        return tally

    def _point(self, hit: bool) -> None:
        """Count one lookup (and maybe a hit) in the current bucket of the hit-rate chart."""
        start = self._clock() // _BUCKET_SECONDS * _BUCKET_SECONDS
        if not self._series or self._series[-1][0] != start:
            self._series.append([start, 0, 0])
        self._series[-1][1] += 1
        self._series[-1][2] += int(hit)

    # ------------------------------------------------------------- events
    def hit(self, tenant: str, model: str, endpoint: str, hit: RecentHit, usage: Usage, seconds: float) -> None:
        """A request answered from the cache."""
        t, m = self.tenant_label(tenant), self.model_label(model)
        kind = "exact" if hit.exact else "semantic"
        money = self._money(model, usage)
        self.requests.labels(t, m, endpoint, f"hit_{kind}").inc()
        self.hits.labels(t, m, kind).inc()
        self.tokens_saved.labels(t, m).inc(usage.total)
        self.money_saved.labels(t, m).inc(money)
        self.request_seconds.labels(t, m, "hit").observe(seconds)
        with self._lock:
            tally = self._tally(t, m)
            tally.requests += 1
            tally.exact_hits += hit.exact
            tally.semantic_hits += not hit.exact
            tally.tokens_saved += usage.total
            tally.money_saved += money
            tally.hit_seconds.append(seconds)
            self._recent.append(hit)
            self._point(True)

    def miss(self, tenant: str, model: str, endpoint: str, seconds: float, *, looked_up: bool) -> None:
        """A request answered by the upstream after a lookup that found nothing (or that it skipped)."""
        t, m = self.tenant_label(tenant), self.model_label(model)
        self.requests.labels(t, m, endpoint, "miss").inc()
        if looked_up:
            self.misses.labels(t, m).inc()
        self.request_seconds.labels(t, m, "miss").observe(seconds)
        with self._lock:
            tally = self._tally(t, m)
            tally.requests += 1
            tally.misses += 1
            if looked_up:
                self._point(False)

    def bypass(self, tenant: str, model: str, endpoint: str, reason: str, seconds: float) -> None:
        """A request sent upstream without the cache (a control, a policy, or a failing cache)."""
        t, m = self.tenant_label(tenant), self.model_label(model)
        self.requests.labels(t, m, endpoint, "bypass").inc()
        self.bypasses.labels(t, m, reason).inc()
        self.request_seconds.labels(t, m, "bypass").observe(seconds)
        with self._lock:
            tally = self._tally(t, m)
            tally.requests += 1
            tally.bypasses += 1

    def error(self, tenant: str, model: str, endpoint: str) -> None:
        """A request that ended in an error (the upstream's, or a timeout)."""
        t, m = self.tenant_label(tenant), self.model_label(model)
        self.requests.labels(t, m, endpoint, "error").inc()
        with self._lock:
            tally = self._tally(t, m)
            tally.requests += 1
            tally.errors += 1

    def lookup_took(self, tenant: str, model: str, seconds: float) -> None:
        self.lookup_seconds.labels(self.tenant_label(tenant), self.model_label(model)).observe(seconds)

    def upstream_took(self, tenant: str, model: str, seconds: float) -> None:
        t, m = self.tenant_label(tenant), self.model_label(model)
        self.upstream_seconds.labels(t, m).observe(seconds)
        with self._lock:
            self._tally(t, m).upstream_seconds.append(seconds)

    def stored(self, tenant: str, model: str) -> None:
        self.stores.labels(self.tenant_label(tenant), self.model_label(model)).inc()

    def wrong_hit(self, tenant: str) -> None:
        t = self.tenant_label(tenant)
        self.wrong_hits.labels(t).inc()
        with self._lock:
            for (tally_tenant, _), tally in self._tallies.items():
                if tally_tenant == t:
                    tally.wrong_hit_reports += 1
                    break
            else:
                self._tally(t, "other").wrong_hit_reports += 1

    def forget_recent(self, key: str) -> None:
        """Drop a reported entry's rows from the recent hits."""
        with self._lock:
            kept = [h for h in self._recent if h.key != key]
            self._recent.clear()
            self._recent.extend(kept)

    def _money(self, model: str, usage: Usage) -> float:
        price = self._price_of(model)
        if price is None:
            return 0.0
        return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6

    # ------------------------------------------------------------- reading
    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard shows, as JSON-ready data."""
        with self._lock:
            rows = [_row(tenant, model, tally) for (tenant, model), tally in sorted(self._tallies.items())]
            hits = [s for tally in self._tallies.values() for s in tally.hit_seconds]
            upstream = [s for tally in self._tallies.values() for s in tally.upstream_seconds]
            recent = [asdict(h) for h in reversed(self._recent)]
            series = [{"at": at, "lookups": int(n), "hits": int(h)} for at, n, h in self._series]
        totals = {name: sum(row[name] for row in rows) for name in
                  ("requests", "exact_hits", "semantic_hits", "misses", "bypasses", "errors",
                   "wrong_hit_reports", "tokens_saved", "money_saved")}
        lookups = totals["exact_hits"] + totals["semantic_hits"] + totals["misses"]
        totals["hit_rate"] = (totals["exact_hits"] + totals["semantic_hits"]) / lookups if lookups else 0.0
        totals.update(_latencies(hits, upstream))
        return {"totals": totals, "by_tenant_model": rows, "recent_hits": recent, "series": series}


def _latencies(hits: list[float], upstream: list[float]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds of hits and of upstream calls."""
    out: dict[str, float | None] = {}
    for name, values in (("hit", hits), ("upstream", upstream)):
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            value = percentile(values, q)
            out[f"{name}_{label}_ms"] = None if value is None else round(value * 1000, 3)
    return out


def _row(tenant: str, model: str, tally: _Tally) -> dict[str, Any]:
    lookups = tally.exact_hits + tally.semantic_hits + tally.misses
    row: dict[str, Any] = {
        "tenant": tenant,
        "model": model,
        "requests": tally.requests,
        "exact_hits": tally.exact_hits,
        "semantic_hits": tally.semantic_hits,
        "misses": tally.misses,
        "bypasses": tally.bypasses,
        "errors": tally.errors,
        "wrong_hit_reports": tally.wrong_hit_reports,
        "tokens_saved": tally.tokens_saved,
        "money_saved": round(tally.money_saved, 6),
        "hit_rate": (tally.exact_hits + tally.semantic_hits) / lookups if lookups else 0.0,
    }
    row.update(_latencies(list(tally.hit_seconds), list(tally.upstream_seconds)))
    return row
