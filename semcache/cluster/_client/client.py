"""``DistributedSemanticKV``: the client of a semcache cluster (the seed's name and API).

The client learns the cluster's shape from any one node (``topology``), then:

* routes ``put``/``get``/``delete``/``exists`` to the shard that owns the key on
  a consistent-hash ring (:class:`~semcache.cluster._routing.HashRing`), and to that
  shard's leader, whose address it caches and corrects when a replica answers
  :class:`~semcache.errors.NotLeaderError` (it follows ``leader_hint``);
* fans ``search`` and ``scan`` out to every shard in parallel and merges the
  answers (top-k by similarity, or sorted keys);
* embeds on the client side, so nodes store the vectors it sends; the client's
  embedder must be the cluster's (same ``model_id`` and ``dim``).

Failure behaviour, in short (docs/guides/cluster.md says it at length):

* leader changes and unreachable replicas are retried with exponential
  backoff until ``request_timeout``; then a write fails with
  :class:`~semcache.errors.NoQuorumError` if some replica answered but none
  could commit, or :class:`~semcache.errors.ShardUnavailableError` if no
  replica answered.  A write that fails this way *may* still have happened
  (it may commit later); a retried put or delete is harmless.
* a ``search`` or ``scan`` with some shards down returns the other shards'
  results; the returned list's ``missing_shards`` names the shards that did not
  answer (also kept in :attr:`DistributedSemanticKV.last_missing_shards`).
  With every shard down it raises ``ShardUnavailableError``.

The parts: :mod:`~semcache.cluster._client.connections` (the connection pool and
the transport seam), :mod:`~semcache.cluster._client.topology` (shard routes),
:mod:`~semcache.cluster._client.retry` (the retry loop),
:mod:`~semcache.cluster._client.fanout` (every shard at once),
:mod:`~semcache.cluster._client.batches` (coalesced requests),
:mod:`~semcache.cluster._client.admin` (the admin calls); the arguments are
checked as the embedded store checks them (:mod:`semcache._engine.calls`).

>>> from semcache import DistributedSemanticKV   # doctest: +SKIP
>>> kv = DistributedSemanticKV(nodes=["grpc://127.0.0.1:8815"])   # doctest: +SKIP
>>> kv.put("doc:api", "REST API endpoints and authentication")   # doctest: +SKIP
True
>>> [r.key for r in kv.search("API authentication", top_k=1)]   # doctest: +SKIP
['doc:api']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from semcache._engine.backend import BulkItems, SearchResult
from semcache._engine.calls import CallChecks, CheckedPut
from semcache._engine.conveniences import Conveniences
from semcache._engine.inputs import (
    Limits,
    check_key,
    check_scan_args,
    check_scope_prefix,
    positive_seconds,
    whole_number,
)
from semcache.cluster._client.admin import ClusterAdmin, stats_report
from semcache.cluster._client.batches import BatchSender
from semcache.cluster._client.connections import Connect, ConnectionPool, NodeConnection, default_connect
from semcache.cluster._client.fanout import FanOut, ShardResults, merge_hits, merge_keys
from semcache.cluster._client.retry import ShardCaller
from semcache.cluster._client.topology import embedding_for_cluster, join_routes
from semcache.cluster._routing import DEFAULT_VNODES, HashRing
from semcache.cluster._wire import PutItem, SearchQuery
from semcache.errors import ConfigurationError

T = TypeVar("T")

READ_FROM = ("leader", "any")
DEFAULT_CONNECTION_TIMEOUT = 2.0
DEFAULT_SEARCH_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_WORKERS = 8


class DistributedSemanticKV(Conveniences):
    """A client of a semcache cluster with the embedded store's API.

    Args:
        nodes: node RPC addresses (``grpc://127.0.0.1:8815``); any one reachable is enough.
        connection_timeout: seconds for one RPC to one node (connect and answer).
        search_timeout: seconds a ``search``/``scan`` waits for the shards before
            returning what it has.
        max_workers: threads used to fan a search out over the shards.
        read_from: ``"leader"`` (reads see every acknowledged write) or ``"any"``
            (follower reads: lower load on leaders, may lag by about a heartbeat).
        token: the cluster's data-plane RPC token, if it has one (reads and writes).
        admin_token: the cluster's admin token, for a client that must run admin calls
            (:meth:`clear_scope`, :meth:`clear_all`); sent instead of ``token`` on every call.
        embedding: the embedder; default: the cluster's model (checked either way).
        request_timeout: seconds a key operation keeps retrying through leader
            changes and unreachable replicas before it fails.
        connect: ``address -> NodeClient`` factory (a seam for tests).
        tls_root_certs: PEM roots to trust for ``grpc+tls://`` addresses.
        vnodes: virtual nodes per shard on the hash ring.
        limits: key and value limits checked before anything is sent (default: the
            cluster's value limit, 48 KiB unless its cluster file sets ``max_value_bytes``).
        clock: monotonic seconds, used by retries (injectable).
        sleep: the sleep used by retries (injectable).

    Raises:
        ShardUnavailableError: no node in ``nodes`` answered.
        AuthenticationError: the token was refused (later calls: an admin call without ``admin_token``).
        EmbeddingMismatchError: ``embedding`` is not the cluster's model.
        ConfigurationError: bad settings.
    """

    def __init__(
        self,
        nodes: Sequence[str] | str,
        *,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
        search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
        max_workers: int = DEFAULT_MAX_WORKERS,
        read_from: str = "leader",
        token: str | None = None,
        admin_token: str | None = None,
        embedding: Any = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect: Connect | None = None,
        tls_root_certs: bytes | None = None,
        vnodes: int = DEFAULT_VNODES,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        seeds = seed_addresses(nodes)
        check_settings(connection_timeout, search_timeout, request_timeout, max_workers, read_from)
        self.connection_timeout = float(connection_timeout)
        self.search_timeout = float(search_timeout)
        self.request_timeout = float(request_timeout)
        self.read_from = read_from
        credential = admin_token or token  # the admin token admits data calls too
        self._pool = ConnectionPool(connect or default_connect(credential, self.connection_timeout, tls_root_certs),
                                    owner="this DistributedSemanticKV")
        self._fan_out = FanOut(max_workers, grace=self.connection_timeout)
        self.last_missing_shards: tuple[str, ...] = ()
        try:
            self._join(seeds, embedding, limits, vnodes, clock, sleep)
        except BaseException:
            self.close()
            raise

    def _join(self, seeds: list[str], embedding: Any, limits: Limits | None, vnodes: int,
              clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        """Learn the cluster (routes, model, limits) from the seeds and set up the per-shard machinery."""
        topology, self._routes = join_routes(self._pool, seeds)
        self.limits = limits or Limits(max_value_bytes=topology.max_value_bytes)
        self.ring = HashRing(self._routes, vnodes=vnodes)
        self._caller = ShardCaller(self._routes, self._pool, clock=clock, sleep=sleep)
        self._sender = BatchSender(self._caller, read_from=self.read_from, request_timeout=self.request_timeout,
                                   search_timeout=self.search_timeout)
        # Concurrent puts, and concurrent searches, to one shard share RPCs (see semcache.cluster._coalesce).
        self._writers = self._sender.put_combiners(self._routes)
        self._searchers = self._sender.search_combiners(self._routes)
        self._embedding = embedding_for_cluster(embedding, topology.model_id, topology.dim)
        # Scopes are left to the nodes' limit: the client's limits are for keys and values.
        self._checks = CallChecks(self._embedding, self.limits)
        self._admin = ClusterAdmin(self._routes, self._pool, self._fan_out, self._caller,
                                   connection_timeout=self.connection_timeout, request_timeout=self.request_timeout)

    # ------------------------------------------------------------- shape
    @property
    def shard_ids(self) -> tuple[str, ...]:
        return self.ring.shard_ids

    def leader_of(self, shard_id: str) -> str | None:
        """The leader address this client last saw for ``shard_id`` (None: not known yet)."""
        return self._routes[shard_id].leader

    def shard_for(self, key: str) -> str:
        """The shard that owns ``key``."""
        return self.ring.shard_for(key)

    def refresh_topology(self) -> None:
        """Re-read every shard's replica list (after ``add-replica``/``remove-replica``).

        Each shard's members are asked of one of its own replicas (they know
        their live membership); the cached leaders are kept when still members.

        Raises:
            ShardUnavailableError: no known replica of some shard answered.
        """
        self._admin.refresh_topology()

    def _check_open(self) -> None:
        self._pool.check_open()

    # ------------------------------------------------------------- keys
    def put(self, key: str, value: bytes | str, ttl_ms: int = 0, text: str | None = None, *,
            scope: str | None = None, vector: np.ndarray | None = None) -> bool:
        """Store ``value`` under ``key`` on its shard; True once a majority committed it.

        Args:
            ttl_ms: time to live in milliseconds; 0 keeps it until deleted or evicted.
            text: what to embed (default: the value as UTF-8; binary values are not searchable).
            scope: the index partition to search it in (default: the shared one).
            vector: a precomputed embedding, used instead of embedding ``text``.

        Raises:
            InvalidInputError: bad key, value, TTL, text or vector (nothing is sent).
            NoQuorumError, ShardUnavailableError: not acknowledged within ``request_timeout``;
                the write may still happen.
        """
        self._check_open()
        put = self._checks.put(key, value, ttl_ms, text, scope, vector)
        self._writers[self.ring.shard_for(key)].submit(put_item(put))
        return True

    def put_many(self, items: BulkItems, ttl_ms: int = 0, *, scope: str | None = None) -> int:
        """Store many values at once (loading or warming a cache); returns how many were stored.

        ``items`` is as for :meth:`semcache.SemanticKV.put_many`.  Every item
        is checked before anything is sent.  Then ``BULK_CHUNK`` (1,024) items
        at a time are embedded (64 per model call) and sent: each shard's puts
        go to its leader in order as ``put_many`` requests of up to 64 puts
        (one Raft entry each), the shards in parallel.

        Raises:
            InvalidInputError: a bad item (named by its position), TTL or scope; nothing is sent.
            NoQuorumError, ShardUnavailableError: a shard did not acknowledge some puts within
                ``request_timeout``.  The message says how many items were stored (later chunks
                are not sent); the unacknowledged ones may still be.  Puts are idempotent, so
                sending the same items again is safe.
        """
        self._check_open()
        return self._checks.put_many(items, ttl_ms, scope, self._send_puts)

    def _send_puts(self, puts: list[CheckedPut]) -> tuple[int, BaseException | None]:
        """One chunk of ``put_many``: each shard's puts to its leader in order, the shards in parallel."""
        self._check_open()
        return self._sender.put_on_shards([put_item(put) for put in puts], self.ring.shard_for)

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if absent or expired."""
        check_key(key, self.limits)
        return self._on_key(key, lambda node: node.get(key, read_from=self.read_from), write=False)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there (a retried delete may report False)."""
        check_key(key, self.limits)
        return self._on_key(key, lambda node: node.delete(key), write=True)

    def exists(self, key: str) -> bool:
        check_key(key, self.limits)
        return self._on_key(key, lambda node: node.exists(key, read_from=self.read_from), write=False)

    def _on_key(self, key: str, call: Callable[[NodeConnection], T], *, write: bool) -> T:
        self._check_open()
        leader = write or self.read_from == "leader"
        return self._caller.run(self.ring.shard_for(key), call, leader=leader, timeout=self.request_timeout)

    # -------------------------------------------------------- every shard
    def scan(self, prefix: str = "", limit: int = 100) -> ShardResults[str]:
        """Keys starting with ``prefix`` over all shards, sorted, at most ``limit``.

        ``missing_shards`` on the result names shards that did not answer.
        """
        prefix, limit = check_scan_args(prefix, limit)
        answers, missing = self._on_every_shard(lambda node: node.scan(prefix, limit, read_from=self.read_from))
        return merge_keys(answers, limit, missing)

    def search(self, query: str | None, top_k: int = 5, threshold: float | None = None, *,
               scope: str | None = None, vector: np.ndarray | None = None) -> ShardResults[SearchResult]:
        """The ``top_k`` entries nearest to ``query`` over all shards, best first.

        Each shard returns its own top ``top_k``; the client keeps the best
        ``top_k`` of their union (ties broken by key, so the order is stable).
        ``missing_shards`` on the result names shards that did not answer
        within ``search_timeout``; their entries are simply absent.

        Raises:
            ShardUnavailableError: no shard answered.
        """
        self._check_open()
        query_vector, scope = self._checks.search(query, top_k, threshold, scope, vector)
        request = SearchQuery(query_vector.tobytes(), scope, top_k, threshold)
        outcome = self._fan_out.run(self.shard_ids, lambda shard_id: self._searchers[shard_id].submit(request),
                                    timeout=self.search_timeout)
        answers, missing = outcome.partial()
        self.last_missing_shards = tuple(missing)
        return merge_hits(answers, top_k, missing)

    def _on_every_shard(self, call: Callable[[NodeConnection], T]) -> tuple[dict[str, T], list[str]]:
        """A read on a replica of every shard at once (``read_from``): the answers and the shards that gave none."""
        self._check_open()
        leader = self.read_from == "leader"
        outcome = self._fan_out.run(
            self.shard_ids,
            lambda shard_id: self._caller.run(shard_id, call, leader=leader, timeout=self.search_timeout),
            timeout=self.search_timeout,
        )
        answers, missing = outcome.partial()
        self.last_missing_shards = tuple(missing)
        return answers, missing

    def clear_scope(self, scope_prefix: str) -> int:
        """Remove every entry in scopes starting with ``scope_prefix`` on every shard; how many.

        An admin call: it needs the client's ``admin_token`` when the cluster has one.

        Raises:
            AuthenticationError: this client has no (or the wrong) admin token.
        """
        return self._admin.clear(check_scope_prefix(scope_prefix))

    def clear_all(self) -> int:
        """Remove everything on every shard; returns how many entries were removed (an admin call, as
        :meth:`clear_scope`)."""
        return self._admin.clear("")

    # ------------------------------------------------------------- admin
    def stats(self) -> dict[str, Any]:
        """Per-shard stats from each leader plus totals; shards that did not answer are listed."""
        answers, missing = self._on_every_shard(lambda node: node.stats())
        return stats_report(answers, missing, self._embedding, self.read_from)

    def cluster_stats(self) -> dict[str, dict[str, Any]]:
        """Raft state of every replica: ``{shard: {replica: health dict or {"error": ...}}}``.

        A replica's health dict has its role, the leader it knows, term, commit
        index, applied index and entries (see ``NodeClient.health``).
        """
        return self._admin.replica_health()

    def health_check(self) -> dict[str, Any]:
        """Whether every shard has a leader that answers (the leaders found are cached).

        Returns:
            ``{"healthy": bool, "shards": {shard: {"leader": addr|None, "replicas_up": n,
            "replicas": n}}}``; ``healthy`` is True when every shard has a reachable leader.
        """
        return self._admin.health_check()

    # ------------------------------------------------------------- life
    def close(self) -> None:
        """Close every connection and the fan-out threads; later calls raise ClosedError."""
        if self._pool.close():
            self._fan_out.close()

    def __repr__(self) -> str:
        return f"DistributedSemanticKV(shards={list(self.ring.shard_ids)}, model={self.model_id})"


def put_item(put: CheckedPut) -> PutItem:
    """The wire record of a checked put (its text is embedded already: none is sent)."""
    return PutItem(put.key, put.value, put.scope, put.vector, put.ttl_ms)


def check_settings(connection_timeout: float, search_timeout: float, request_timeout: float, max_workers: int,
                   read_from: str) -> None:
    """Refuse a client's bad timeouts (seconds > 0), ``max_workers`` (an int >= 1) or ``read_from``.

    Raises:
        ConfigurationError: the first bad one, named.
    """
    for name, value in (
        ("connection_timeout", connection_timeout),
        ("search_timeout", search_timeout),
        ("request_timeout", request_timeout),
    ):
        positive_seconds(value, name)
    whole_number(max_workers, "max_workers", minimum=1, error=ConfigurationError)
    if read_from not in READ_FROM:
        raise ConfigurationError(f"read_from must be one of {READ_FROM}, got {read_from!r}")


def seed_addresses(nodes: Sequence[str] | str) -> list[str]:
    """The seed addresses as a list.

    >>> seed_addresses("grpc://127.0.0.1:8815")
    ['grpc://127.0.0.1:8815']
    >>> seed_addresses(["127.0.0.1:8815"])
    Traceback (most recent call last):
    ...
    semcache.errors.ConfigurationError: node address '127.0.0.1:8815' has no scheme: write 'grpc://127.0.0.1:8815' ...

    Raises:
        ConfigurationError: none, one that is not a non-empty str, or one without a scheme (``grpc://``).
    """
    seeds = [nodes] if isinstance(nodes, str) else list(nodes)
    if not seeds or not all(isinstance(n, str) and n for n in seeds):
        raise ConfigurationError(f"nodes must be a non-empty list of addresses, got {nodes!r}")
    for address in seeds:
        if "://" not in address:
            raise ConfigurationError(
                f"node address {address!r} has no scheme: write 'grpc://{address}' "
                f"(or 'grpc+tls://{address}' for a cluster with TLS)"
            )
    return seeds
