"""Prometheus metrics of the Python API: a :class:`~semcache.SemanticCache`'s counters and its store's sizes.

Needs ``prometheus-client`` (the ``gateway`` or ``cluster`` extra); ``import
semcache`` never imports it, and importing this module without it raises
:class:`~semcache.errors.MissingDependencyError`.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64)), threshold=0.9)
>>> registry = CollectorRegistry()
>>> collector = register(cache, registry)
>>> _ = cache.store("What is the capital of France?", "Paris")
>>> cache.lookup("What is the capital of France?").exact
True
>>> text = generate_latest(registry).decode()
>>> 'semcache_cache_hits_total{kind="exact",namespace="semcache"} 1.0' in text
True
>>> 'semcache_store_entries{namespace="semcache"} 1.0' in text
True
>>> cache.close()

The metrics (counters end in ``_total`` when scraped):

* ``semcache_cache_*`` from ``SemanticCache.stats``, label ``namespace``:
  ``lookups``, ``hits`` (label ``kind``: exact, semantic), ``misses``,
  ``stores``, ``computes``, ``guard_vetoes`` (label ``reason``),
  ``verifier_refusals``, ``wrong_hit_reports``, ``single_flight_waits``.
* ``semcache_store_*`` from the backend's ``stats()``, label ``namespace``:
  ``up`` (1 when ``stats()`` answered), ``entries``, ``bytes``,
  ``searchable_entries``, ``scopes``, ``index_slots``, ``index_queue``, and the
  counters ``puts``, ``gets``, ``get_hits``, ``deletes``, ``searches``,
  ``search_hits``, ``expired``, ``evicted``, ``embedding_model_calls``,
  ``embedding_memo_hits``.  Over a :class:`~semcache.DistributedSemanticKV`
  they are the sums over the shard leaders that answered, and
  ``missing_shards`` counts those that did not.

A store shared by several registered caches (``SemanticCache.view``) is read
once per scrape and reported once, its ``namespace`` label the caches'
namespaces joined by commas; a backend registered alone has an empty
``namespace``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from semcache._cache.cache import SemanticCache
from semcache._prometheus import (
    EMBEDDED_FIELDS,
    STORE_FIELDS,
    CollectorRegistry,
    Metric,
    MetricsServer,
    StatField,
    family,
    serve_registry,
    stat_families,
)
from semcache.errors import InvalidInputError, SemcacheError

__all__ = ["CacheCollector", "MetricsServer", "register", "serve_metrics", "unregister"]

logger = logging.getLogger("semcache")

CACHE_PREFIX = "semcache_cache_"
STORE_PREFIX = "semcache_store_"
LABELS = ("namespace",)

# CacheStats field -> (metric name after the prefix, help).  hits and guard_vetoes have their own labels.
_CACHE_COUNTERS = (
    ("lookups", "lookups", "Lookups (lookup, lookup_at, explain, get_or_compute)"),
    ("misses", "misses", "Lookups that found nothing to serve"),
    ("stores", "stores", "Answers stored"),
    ("computes", "computes", "Answers computed by get_or_compute after a miss"),
    ("verifier_refusals", "verifier_refusals", "Nearest entries the verifier scored below the operating point"),
    ("wrong_hits_reported", "wrong_hit_reports", "Hits reported wrong"),
    ("single_flight_waits", "single_flight_waits", "Callers that waited for another caller's computation"),
)
_STORE_FIELDS: tuple[StatField, ...] = STORE_FIELDS + EMBEDDED_FIELDS


class CacheCollector:
    """A prometheus-client collector of caches' and stores' stats, read at each scrape.

    Args:
        caches: :class:`~semcache.SemanticCache` objects (cache and store
            metrics) or backends such as :class:`~semcache.SemanticKV` (store
            metrics only); :meth:`add` takes more later.

    Register it with ``registry.register(collector)``, or let :func:`register`
    do it (one collector per registry: a registry refuses two collectors that
    export the same names).
    """

    def __init__(self, *caches: Any) -> None:
        self._lock = threading.Lock()
        self._caches: list[SemanticCache] = []
        self._backends: list[Any] = []
        for cache in caches:
            self.add(cache)

    def add(self, cache: Any) -> None:
        """Export ``cache`` too (a SemanticCache or a backend; added twice, it is exported once)."""
        with self._lock:
            if isinstance(cache, SemanticCache):
                if not any(c is cache for c in self._caches):
                    self._caches.append(cache)
                return
            if not callable(getattr(cache, "stats", None)):
                raise InvalidInputError(
                    f"expected a SemanticCache or a backend with stats(), got {type(cache).__name__}")
            if not any(b is cache for b in self._backends):
                self._backends.append(cache)

    def remove(self, cache: Any) -> bool:
        """Stop exporting ``cache``; whether it was exported."""
        with self._lock:
            kept = [c for c in self._caches if c is not cache]
            kept_backends = [b for b in self._backends if b is not cache]
            removed = len(kept) < len(self._caches) or len(kept_backends) < len(self._backends)
            self._caches, self._backends = kept, kept_backends
            return removed

    @property
    def empty(self) -> bool:
        """Whether it exports nothing (no cache, no backend)."""
        with self._lock:
            return not self._caches and not self._backends

    def describe(self) -> Iterator[Metric]:
        """Every family this collector exports, without samples (so registering it reads no stats)."""
        yield from _cache_families([])
        yield from _store_families([])

    def collect(self) -> Iterator[Metric]:
        """Every family, with one sample per cache (cache metrics) and per distinct store (store metrics)."""
        with self._lock:
            caches, backends = list(self._caches), list(self._backends)
        yield from _cache_families(caches)
        yield from _store_families(_stores(caches, backends))


def _stores(caches: list[SemanticCache], backends: list[Any]) -> list[tuple[str, Any]]:
    """Each distinct store once, with its ``namespace`` label: the namespaces of the caches over it."""
    stores: list[tuple[list[str], Any]] = []
    for cache in caches:
        for namespaces, backend in stores:
            if backend is cache.backend:
                namespaces.append(cache.namespace)
                break
        else:
            stores.append(([cache.namespace], cache.backend))
    stores += [([], backend) for backend in backends if not any(backend is b for _, b in stores)]
    return [(",".join(sorted(set(namespaces))), backend) for namespaces, backend in stores]


def _cache_families(caches: list[SemanticCache]) -> Iterator[Metric]:
    """The ``semcache_cache_*`` families, one sample per cache (per reason for guard vetoes)."""
    hits = family(CACHE_PREFIX + "hits", "Lookups answered from the cache, by kind", "counter", (*LABELS, "kind"))
    vetoes = family(CACHE_PREFIX + "guard_vetoes", "Nearest entries the hit guard vetoed, by reason", "counter",
                    (*LABELS, "reason"))
    counters = {field: family(CACHE_PREFIX + name, help_text, "counter", LABELS)
                for field, name, help_text in _CACHE_COUNTERS}
    for cache in caches:
        stats = cache.stats
        by_reason = dict(stats.vetoes_by_reason)  # a copy: lookups on other threads add reasons
        hits.add_metric([cache.namespace, "exact"], stats.exact_hits)
        hits.add_metric([cache.namespace, "semantic"], stats.semantic_hits)
        for reason, count in sorted(by_reason.items()):
            vetoes.add_metric([cache.namespace, reason], count)
        unexplained = stats.guard_vetoes - sum(by_reason.values())
        if unexplained > 0:
            vetoes.add_metric([cache.namespace, "other"], unexplained)
        for field, metric in counters.items():
            metric.add_metric([cache.namespace], getattr(stats, field))
    yield hits
    yield vetoes
    yield from counters.values()


def _store_families(stores: list[tuple[str, Any]]) -> Iterator[Metric]:
    """The ``semcache_store_*`` families: one sample per store whose ``stats()`` answered, ``up`` for each."""
    up = family(STORE_PREFIX + "up", "1 when the store's stats() answered at this scrape, else 0", "gauge", LABELS)
    missing = family(STORE_PREFIX + "missing_shards", "Shards whose leader did not answer (a cluster client)",
                     "gauge", LABELS)
    capacity = family(STORE_PREFIX + "capacity", "Entries kept before eviction (stores with a capacity)", "gauge",
                      LABELS)
    rows: list[tuple[tuple[str], dict[str, Any]]] = []
    for namespace, backend in stores:
        stats = _read_stats(backend)
        up.add_metric([namespace], float(stats is not None))
        if stats is None:
            continue
        rows.append(((namespace,), store_totals(stats)))
        if isinstance(stats.get("missing_shards"), list):
            missing.add_metric([namespace], len(stats["missing_shards"]))
        if isinstance(stats.get("capacity"), int):
            capacity.add_metric([namespace], stats["capacity"])
    yield up
    yield from stat_families(STORE_PREFIX, LABELS, rows, _STORE_FIELDS)
    yield capacity
    yield missing


def _read_stats(backend: Any) -> dict[str, Any] | None:
    """``backend.stats()``, or None when it failed (closed, a cluster without leaders): a scrape never fails."""
    try:
        stats = backend.stats()
    except SemcacheError as exc:
        logger.debug("semcache metrics: stats() of %r failed: %s", backend, exc)
        return None
    return stats if isinstance(stats, dict) else None


def store_totals(stats: dict[str, Any]) -> dict[str, Any]:
    """A store's numbers: its own ``stats()``, or for a cluster client the sums over its shards' stats.

    >>> store_totals({"shards": {"s0": {"entries": 2, "puts": 5}, "s1": {"entries": 1}}, "entries": 3})
    {'entries': 3, 'puts': 5, 'embedding_model_calls': 0, 'embedding_memo_hits': 0}
    """
    shards = stats.get("shards")
    if not isinstance(shards, dict):
        return stats
    keys = [f.key for f in STORE_FIELDS]
    totals = {key: sum(_int(shard.get(key)) for shard in shards.values()) for key in keys}
    totals = {key: value for key, value in totals.items() if any(key in shard for shard in shards.values())}
    # The client embeds, not the nodes: its own embedding counters.
    totals.update({key: _int(stats.get(key)) for key in ("embedding_model_calls", "embedding_memo_hits")})
    return totals


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# One collector per registry: register() adds to it rather than registering a second one with the same names.
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, CacheCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def register(cache: Any, registry: CollectorRegistry | None = None) -> CacheCollector:
    """Export ``cache`` (a SemanticCache or a backend) from ``registry``.

    Args:
        cache: the cache (or backend) whose stats to export.
        registry: default ``prometheus_client.REGISTRY``, the one ``prometheus_client.start_http_server``
            and most frameworks' ``/metrics`` serve.

    Returns:
        The registry's :class:`CacheCollector` (made and registered on the first call for that registry).
    """
    registry = _default(registry)
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(registry)
        if collector is None:
            collector = _COLLECTORS[registry] = CacheCollector()
            registry.register(collector)
    collector.add(cache)
    return collector


def unregister(cache: Any, registry: CollectorRegistry | None = None) -> bool:
    """Stop exporting ``cache`` from ``registry`` (default ``prometheus_client.REGISTRY``); whether it was.

    The registry's collector is unregistered with its last cache, so a closed
    cache's series disappear instead of staying at their last values.
    """
    registry = _default(registry)
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(registry)
        if collector is None or not collector.remove(cache):
            return False
        if collector.empty:
            registry.unregister(collector)
            del _COLLECTORS[registry]
    return True


def _default(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def serve_metrics(cache_or_backend: Any, port: int, host: str = "127.0.0.1", *,
                  allow_remote: bool = False) -> MetricsServer:
    """Serve the metrics of ``cache_or_backend`` over HTTP (``GET /metrics``) from a daemon thread.

    The server has its own registry holding only these metrics; to add them to
    an existing ``/metrics``, use :func:`register` instead.

    Args:
        cache_or_backend: a SemanticCache, or a backend alone (store metrics only).
        port: the TCP port; 0 picks a free one (read it from the result's ``port``).
        host: the address to listen on, loopback by default.
        allow_remote: accept a ``host`` that is not loopback (the endpoint has no authentication).

    Returns:
        The running :class:`MetricsServer`; ``close()`` stops it.

    Raises:
        ConfigurationError: a non-loopback ``host`` without ``allow_remote``, a bad port, or the
            address is in use.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CacheCollector(cache_or_backend))
    return serve_registry(registry, port, host, allow_remote=allow_remote)
