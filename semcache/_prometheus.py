"""What the Python API's and the node's Prometheus metrics share: the stats-to-metric table and the HTTP server.

The one module that imports :mod:`prometheus_client` for them (the gateway's own
metrics live in :mod:`semcache._gateway.metrics`); without it, importing this
module raises :class:`~semcache.errors.MissingDependencyError` naming the extra.

A store's ``stats()`` (an embedded :class:`~semcache.SemanticKV`, a node's
shard) is read through :data:`STORE_FIELDS`: one row per number worth
scraping, with the metric it becomes.  The same table names the
``semcache_store_*`` metrics of :mod:`semcache.metrics` and the
``semcache_node_*`` ones of a node, so a number has one name after its prefix.

>>> rows = [(("a",), {"entries": 3, "value_bytes": 12, "puts": 5})]
>>> [(f.name, f.samples[0].value) for f in stat_families("x_", ("namespace",), rows, STORE_FIELDS)][:3]
[('x_entries', 3.0), ('x_bytes', 12.0), ('x_searchable_entries', 0.0)]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

try:
    from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from semcache.errors import missing_extra

    raise missing_extra("prometheus-client", "gateway", "metrics") from exc

from semcache._engine.inputs import whole_number
from semcache.cluster._config import is_loopback
from semcache.errors import ConfigurationError

__all__ = [
    "EMBEDDED_FIELDS", "STORE_FIELDS", "CollectorRegistry", "CounterMetricFamily", "GCCollector", "GaugeMetricFamily",
    "Metric", "MetricsServer", "ProcessCollector", "StatField", "family", "number", "serve_registry", "stat_families",
]

logger = logging.getLogger("semcache")

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class StatField:
    """One number of a ``stats()`` dict and the metric it becomes (the name after the prefix)."""

    key: str
    name: str
    kind: Kind
    help: str


# A store's numbers: SemanticKV.stats() and a node's shard stats (ShardState.stats() plus its counters).
# A key a store does not report is exported as 0, so every scrape has the same series.
STORE_FIELDS: tuple[StatField, ...] = (
    StatField("entries", "entries", "gauge", "Entries stored (expired ones until purged)"),
    StatField("value_bytes", "bytes", "gauge", "Bytes of stored values"),
    StatField("searchable", "searchable_entries", "gauge", "Entries in a vector index"),
    StatField("scopes", "scopes", "gauge", "Scopes (one vector index each)"),
    StatField("index_slots", "index_slots", "gauge", "Slots allocated in the vector indexes"),
    StatField("index_queue", "index_queue", "gauge", "Index inserts deferred to idle moments (already searchable)"),
    StatField("puts", "puts", "counter", "Entries written"),
    StatField("gets", "gets", "counter", "Reads by key"),
    StatField("get_hits", "get_hits", "counter", "Reads by key that found an entry"),
    StatField("deletes", "deletes", "counter", "Deletes by key"),
    StatField("searches", "searches", "counter", "Nearest-neighbour searches"),
)
# Only an embedded store reports these.
EMBEDDED_FIELDS: tuple[StatField, ...] = (
    StatField("search_hits", "search_hits", "counter", "Searches that found at least one entry"),
    StatField("expired", "expired", "counter", "Entries removed because their TTL passed"),
    StatField("evicted", "evicted", "counter", "Entries evicted over capacity"),
    StatField("embedding_model_calls", "embedding_model_calls", "counter", "Texts the embedding model embedded"),
    StatField("embedding_memo_hits", "embedding_memo_hits", "counter", "Embeddings reused from the memo"),
)


def family(name: str, help_text: str, kind: Kind, labels: Sequence[str]) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty metric family (a counter's name without ``_total``: prometheus-client adds it)."""
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=list(labels))
    return GaugeMetricFamily(name, help_text, labels=list(labels))


def stat_families(
    prefix: str,
    labels: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Mapping[str, Any]]],
    fields: Iterable[StatField],
) -> Iterator[Metric]:
    """One family per field, ``prefix + field.name``, with one sample per row (its label values and stats)."""
    rows = list(rows)
    for field in fields:
        metric = family(prefix + field.name, field.help, field.kind, labels)
        for label_values, stats in rows:
            metric.add_metric(list(label_values), number(stats.get(field.key)))
        yield metric


def number(value: object) -> float:
    """A stats value as a sample: numbers (and bools) as they are, anything else (None, absent) as 0."""
    return float(value) if isinstance(value, int | float) else 0.0


class MetricsServer:
    """prometheus-client's HTTP server for one registry, on a daemon thread: ``GET /metrics`` (any path) answers.

    Attributes:
        host, port: where it listens (``port`` is the one bound when 0 was asked for).
        url: ``http://host:port/metrics``.
    """

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.host = host
        self.port = int(self._server.server_port)
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop listening and wait for the server thread; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r})"


def serve_registry(registry: CollectorRegistry, port: int, host: str, *, allow_remote: bool) -> MetricsServer:
    """Serve ``registry`` on ``host:port``: loopback only unless ``allow_remote`` (the endpoint has no
    authentication).

    Raises:
        ConfigurationError: a bad port, a non-loopback host without ``allow_remote``, or the address is taken.
    """
    whole_number(port, "port", error=ConfigurationError)
    if port > 65535:
        raise ConfigurationError(f"port must be at most 65535, got {port}")
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"host must be a non-empty str, got {host!r}")
    if not allow_remote and not is_loopback(host):
        raise ConfigurationError(f"metrics host {host!r} is not loopback: /metrics has no authentication, so "
                                 "listening beyond this machine needs allow_remote=True")
    if not is_loopback(host):
        logger.warning("semcache: serving metrics on %s:%s, beyond this machine, without authentication", host, port)
    return MetricsServer(registry, port, host)
