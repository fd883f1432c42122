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

Failure behaviour, in short (docs/operations/timeouts.md says it at length):

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

The transport is a seam: ``connect(address) -> NodeClient`` (default:
:class:`semcache.cluster._flight.NodeClient` over Arrow Flight), so the routing,
merging and retry logic is tested in-process with a fake.

>>> from semcache import DistributedSemanticKV   # doctest: +SKIP
>>> kv = DistributedSemanticKV(nodes=["grpc://127.0.0.1:8815"])   # doctest: +SKIP
>>> kv.put("doc:api", "REST API endpoints and authentication")   # doctest: +SKIP
True
>>> [r.key for r in kv.search("API authentication", top_k=1)]   # doctest: +SKIP
['doc:api']
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

import numpy as np

from semcache._engine.backend import BulkItems, SearchResult
from semcache._engine.bulk import BulkPut, bulk_puts, load_in_chunks
from semcache._engine.conveniences import Conveniences
from semcache._engine.inputs import (
    Limits,
    check_key,
    check_scan_args,
    check_scope,
    check_search_args,
    check_ttl_ms,
    check_value_size,
    coerce_value,
    positive_seconds,
    put_vector,
    search_vector,
    whole_number,
)
from semcache.cluster._coalesce import Combiner, take_batch
from semcache.cluster._config import ClusterConfig, Replica
from semcache.cluster._routing import DEFAULT_VNODES, HashRing
from semcache.cluster._wire import Hits, PutItem, SearchQuery
from semcache.embeddings import BaseEmbedding, as_embedding
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    EmbeddingMismatchError,
    InvalidInputError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
)

T = TypeVar("T")

READ_FROM = ("leader", "any")
DEFAULT_CONNECTION_TIMEOUT = 2.0
DEFAULT_SEARCH_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_WORKERS = 8
FIRST_BACKOFF = 0.02
MAX_BACKOFF = 0.5
MAX_REDIRECTS = 3


def _put_size(item: PutItem) -> int:
    return item.size


def _query_size(query: SearchQuery) -> int:
    return len(query.vector)


def _shard_unanswering(error: BaseException) -> bool:
    """An error after which requests queued for the same shard fail too (it already took a whole timeout)."""
    return isinstance(error, ShardUnavailableError | NoQuorumError)


class NodeConnection(Protocol):
    """What the client calls on one node (``semcache.cluster._flight.NodeClient`` has it all)."""

    def put(self, key: str, value: bytes, *, scope: str, vector: bytes | None, ttl_ms: int) -> None: ...
    def put_many(self, items: Sequence[PutItem]) -> list[SemcacheError | None]: ...
    def search_many(
        self, queries: Sequence[SearchQuery], *, read_from: str = "leader"
    ) -> list[Hits | SemcacheError]: ...
    def get(self, key: str, *, read_from: str = "leader") -> bytes | None: ...
    def delete(self, key: str) -> bool: ...
    def exists(self, key: str, *, read_from: str = "leader") -> bool: ...
    def scan(self, prefix: str, limit: int, *, read_from: str = "leader") -> list[str]: ...
    def search(
        self, vector: bytes, *, scope: str, top_k: int, threshold: float | None, read_from: str = "leader"
    ) -> list[tuple[str, bytes, float]]: ...
    def clear(self, scope_prefix: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...
    def topology(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


Connect = Callable[[str], NodeConnection]


@dataclass
class ShardRoute:
    """What the client knows of one shard: its replicas and the leader it last saw."""

    id: str
    replicas: list[Replica]
    leader: str | None = None  # rpc address
    next_replica: int = field(default=0)

    def candidates(self) -> list[str]:
        """Addresses to try, the believed leader first, then the others in rotation."""
        addresses = [r.rpc for r in self.replicas]
        start = self.next_replica % len(addresses) if addresses else 0
        rotated = addresses[start:] + addresses[:start]
        if self.leader is None:
            return rotated
        return [self.leader] + [a for a in rotated if a != self.leader]


class ShardResults(list[T]):
    """A list of results merged from the shards; ``missing_shards`` names those that did not answer.

    >>> results = ShardResults(["a"], missing_shards=("shard-1",))
    >>> results, results.missing_shards, results.complete
    (['a'], ('shard-1',), False)
    """

    def __init__(self, items: Iterable[T] = (), *, missing_shards: Sequence[str] = ()) -> None:
        super().__init__(items)
        self.missing_shards: tuple[str, ...] = tuple(missing_shards)

    @property
    def complete(self) -> bool:
        """True when every shard answered."""
        return not self.missing_shards


def parse_topology(topology: dict[str, Any]) -> tuple[list[ShardRoute], str, int]:
    """Shard routes, model id and dim from a node's ``topology()`` answer.

    Raises:
        ClusterError: the answer is malformed or names no shard.
    """
    try:
        routes = [
            ShardRoute(
                str(shard["id"]),
                [Replica(id=str(r["id"]), raft=str(r.get("raft", "")), rpc=str(r["rpc"])) for r in shard["replicas"]],
            )
            for shard in topology["shards"]
        ]
        model_id, dim = str(topology["model_id"]), int(topology["dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterError(f"malformed topology from the cluster: {exc!r}") from exc
    if not routes or any(not route.replicas for route in routes):
        raise ClusterError(f"the cluster topology names no shard or a shard without replicas: {topology!r}")
    return routes, model_id, dim


def embedding_for_cluster(embedding: Any, model_id: str, dim: int) -> BaseEmbedding:
    """The embedder to use against a cluster stamped ``model_id``/``dim``.

    ``None`` picks the cluster's own: a ``hash:DIM:SEED`` id gives that
    :class:`~semcache.embeddings.HashEmbedding`, anything else is loaded as a
    sentence-transformers model.

    Raises:
        EmbeddingMismatchError: ``embedding`` is another model or dimension.
    """
    chosen = as_embedding(model_id if embedding is None else embedding)
    if (chosen.model_id, chosen.dim) != (model_id, dim):
        raise EmbeddingMismatchError(
            f"the client embeds with {chosen.model_id} (dim {chosen.dim}) but the cluster "
            f"stores {model_id} (dim {dim})"
        )
    return chosen


def cluster_value_limit(topology: dict[str, Any]) -> int:
    """The largest value the cluster takes: from its topology, else the cluster-file default."""
    if "max_value_bytes" in topology:
        return int(topology["max_value_bytes"])
    return int(next(f.default for f in fields(ClusterConfig) if f.name == "max_value_bytes"))  # type: ignore[arg-type]


def timed_out(exc: ShardUnavailableError) -> bool:
    """True if the node took the call but did not finish it in time (not: could not be reached).

    A write that timed out may still commit; a refused connection never reached a node.
    """
    return type(exc.__cause__).__name__ == "FlightTimedOutError" or getattr(exc, "timed_out", False) is True


def default_connect(
    token: str | None, timeout: float, tls_root_certs: bytes | None
) -> Connect:  # pragma: no cover - exercised by the cluster tests
    from semcache.cluster._flight import NodeClient

    def connect(address: str) -> NodeConnection:
        return NodeClient(address, token=token, timeout=timeout, tls_root_certs=tls_root_certs)

    return connect


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
        token: the cluster's RPC token, if it has one.
        embedding: the embedder; default: the cluster's model (checked either way).
        request_timeout: seconds a key operation keeps retrying through leader
            changes and unreachable replicas before it fails.
        connect: ``address -> NodeClient`` factory (a seam for tests).
        tls_root_certs: PEM roots to trust for ``grpc+tls://`` addresses.
        vnodes: virtual nodes per shard on the hash ring.
        limits: key and value limits checked before anything is sent (default: the
            cluster's value limit, 48 KiB unless its cluster file sets ``max_value_bytes``).
        clock: monotonic seconds, read by retries (injectable).
        sleep: the sleep used between retries (injectable).

    Raises:
        ShardUnavailableError: no node in ``nodes`` answered.
        AuthenticationError: the token was refused.
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
        embedding: Any = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect: Connect | None = None,
        tls_root_certs: bytes | None = None,
        vnodes: int = DEFAULT_VNODES,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        if not seeds or not all(isinstance(n, str) and n for n in seeds):
            raise ConfigurationError(f"nodes must be a non-empty list of addresses, got {nodes!r}")
        for name, value in (
            ("connection_timeout", connection_timeout),
            ("search_timeout", search_timeout),
            ("request_timeout", request_timeout),
        ):
            positive_seconds(value, name)
        whole_number(max_workers, "max_workers", minimum=1, error=ConfigurationError)
        if read_from not in READ_FROM:
            raise ConfigurationError(f"read_from must be one of {READ_FROM}, got {read_from!r}")
        self.connection_timeout = float(connection_timeout)
        self.search_timeout = float(search_timeout)
        self.request_timeout = float(request_timeout)
        self.read_from = read_from
        self._connect = connect or default_connect(token, self.connection_timeout, tls_root_certs)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._connections: dict[str, NodeConnection] = {}
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="semcache-fanout")
        self.last_missing_shards: tuple[str, ...] = ()
        try:
            topology = self._first_topology(seeds)
            routes, model_id, dim = parse_topology(topology)
            self.limits = limits or Limits(max_value_bytes=cluster_value_limit(topology))
            self._routes = {route.id: route for route in routes}
            for route in routes:
                if route.id != topology.get("answered_for"):
                    # The seed knows its own shard's live members, others only from the cluster file.
                    with contextlib.suppress(ShardUnavailableError):
                        self._refresh_route(route)
            self.ring = HashRing(self._routes, vnodes=vnodes)
            # Concurrent puts, and concurrent searches, to one shard share RPCs (see semcache.cluster._coalesce).
            self._writers = {
                shard_id: Combiner[PutItem, None](functools.partial(self._send_puts, shard_id), size=_put_size,
                                                  fails_queued=_shard_unanswering)
                for shard_id in self._routes
            }
            self._searchers = {
                shard_id: Combiner[SearchQuery, Hits](functools.partial(self._send_searches, shard_id),
                                                      size=_query_size, fails_queued=_shard_unanswering)
                for shard_id in self._routes
            }
            self._embedding = embedding_for_cluster(embedding, model_id, dim)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- plumbing
    @property
    def embedding(self) -> BaseEmbedding:
        return self._embedding

    @property
    def model_id(self) -> str:
        return self._embedding.model_id

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
        self._check_open()
        for route in self._routes.values():
            self._refresh_route(route)

    def _refresh_route(self, route: ShardRoute) -> None:
        """Ask the shard's own replicas for its live members (a node knows other shards only from its file)."""
        topology = self._first_topology([r.rpc for r in route.replicas])
        fresh = {r.id: r for r in parse_topology(topology)[0]}.get(route.id)
        if fresh is not None:
            route.replicas = fresh.replicas
            if route.leader not in {r.rpc for r in fresh.replicas}:
                route.leader = None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this DistributedSemanticKV is closed")

    def _connection(self, address: str) -> NodeConnection:
        with self._lock:
            self._check_open()
            connection = self._connections.get(address)
            if connection is None:
                connection = self._connections[address] = self._connect(address)
            return connection

    def _first_topology(self, seeds: list[str]) -> dict[str, Any]:
        failures: list[str] = []
        for address in seeds:
            try:
                return self._connection(address).topology()
            except AuthenticationError:
                raise
            except ClusterError as exc:
                failures.append(f"{address}: {exc}")
        raise ShardUnavailableError("no node answered the topology request: " + "; ".join(failures))

    def _backoff(self, attempt: int, deadline: float) -> bool:
        """Sleep before retry ``attempt``; False when the deadline leaves no time for it."""
        pause = min(MAX_BACKOFF, FIRST_BACKOFF * 2**attempt) * (0.5 + random.random() / 2)
        remaining = deadline - self._clock()
        if remaining <= 0:
            return False
        self._sleep(min(pause, remaining))
        return True

    def _on_shard(self, shard_id: str, call: Callable[[NodeConnection], T], *, leader: bool, timeout: float) -> T:
        """Run ``call`` on the shard's leader (or any replica), retrying until ``timeout``.

        Raises:
            NoQuorumError: some replica answered but none could commit or lead.
            ShardUnavailableError: no replica answered.
        """
        route = self._routes[shard_id]
        deadline = self._clock() + timeout
        answered = False  # did any replica answer at all (even "not leader"), or take the call and time out?
        last: ClusterError | None = None
        attempt = 0
        while True:
            redirects = 0
            redirected = True
            while redirected:  # follow fresh leader hints at once, a few times, before backing off
                redirected = False
                for address in route.candidates() if leader else self._any_order(route):
                    try:
                        result = call(self._connection(address))
                    except NotLeaderError as exc:
                        answered, last = True, exc
                        hint = exc.leader_hint
                        route.leader = hint if hint and hint != address else None
                        if route.leader is not None and redirects < MAX_REDIRECTS:
                            redirects += 1
                            redirected = True
                            break
                        continue
                    except NoQuorumError as exc:
                        answered, last = True, exc
                        break  # the leader is up but cannot commit: back off rather than hop replicas
                    except ShardUnavailableError as exc:
                        last = exc
                        answered = answered or timed_out(exc)  # reachable, but could not finish in time
                        if route.leader == address:
                            route.leader = None
                        route.next_replica += 1
                        continue
                    if leader:
                        route.leader = address
                    return result
                if self._clock() >= deadline:
                    redirected = False
            if not self._backoff(attempt, deadline):
                break
            attempt += 1
        if answered:
            raise NoQuorumError(
                f"shard {shard_id} could not serve the request within {timeout:.1f}s: "
                f"no leader with a quorum ({last})",
                shard_id=shard_id,
            ) from last
        raise ShardUnavailableError(
            f"no replica of shard {shard_id} answered within {timeout:.1f}s ({last})", shard_id=shard_id
        ) from last

    @staticmethod
    def _any_order(route: ShardRoute) -> list[str]:
        # Follower reads spread over the replicas; a failed one is skipped next time.
        addresses = [r.rpc for r in route.replicas]
        start = route.next_replica % len(addresses)
        route.next_replica += 1
        return addresses[start:] + addresses[:start]

    def _on_key(self, key: str, call: Callable[[NodeConnection], T], *, write: bool) -> T:
        self._check_open()
        leader = write or self.read_from == "leader"
        return self._on_shard(self.ring.shard_for(key), call, leader=leader, timeout=self.request_timeout)

    def _fan_out(self, call: Callable[[NodeConnection], T], *, timeout: float) -> tuple[dict[str, T], list[str]]:
        """Run ``call`` on a replica of every shard at once; the answers and the shards that gave none."""
        leader = self.read_from == "leader"
        return self._on_every_shard_at_once(
            lambda shard_id: self._on_shard(shard_id, call, leader=leader, timeout=timeout), timeout=timeout
        )

    def _on_every_shard_at_once(
        self, per_shard: Callable[[str], T], *, timeout: float
    ) -> tuple[dict[str, T], list[str]]:
        """Run ``per_shard(shard_id)`` for every shard at once; the answers and the shards that gave none.

        The first shard runs in the calling thread and the others in the pool,
        which saves a thread hand-off per search (all of it with one shard).
        """
        self._check_open()
        first, *others = self.ring.shard_ids
        futures: dict[str, Future[T]] = {shard_id: self._executor.submit(per_shard, shard_id) for shard_id in others}
        outcomes: dict[str, T | BaseException | None] = {}
        try:
            outcomes[first] = per_shard(first)
        except ClusterError as exc:
            outcomes[first] = exc
        if futures:
            wait(futures.values(), timeout=max(0.0, timeout + self.connection_timeout))
        for shard_id, future in futures.items():
            outcomes[shard_id] = (future.exception() or future.result()) if future.done() else None
        answers: dict[str, T] = {}
        missing: list[str] = []
        for shard_id in self.ring.shard_ids:
            outcome = outcomes[shard_id]
            if outcome is None or isinstance(outcome, BaseException):
                operational = isinstance(outcome, ClusterError) and not isinstance(outcome, AuthenticationError)
                if outcome is not None and not operational:
                    raise outcome  # misuse or a refused token: no shard would answer differently
                missing.append(shard_id)
            else:
                answers[shard_id] = outcome
        if not answers:
            raise ShardUnavailableError(f"no shard answered within {timeout:.1f}s: {sorted(missing)}")
        self.last_missing_shards = tuple(missing)
        return answers, missing

    # ----------------------------------------------------------------- API
    def put(
        self,
        key: str,
        value: bytes | str,
        ttl_ms: int = 0,
        text: str | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> bool:
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
        check_key(key, self.limits)
        data = coerce_value(value)
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope)
        check_value_size(data, self.limits)  # before paying for the embedding
        item = PutItem(key, data, scope, put_vector(self._embedding, data, text, vector), ttl_ms)
        self._writers[self.ring.shard_for(key)].submit(item)
        return True

    def put_many(
        self,
        items: BulkItems,
        ttl_ms: int = 0,
        *,
        scope: str | None = None,
    ) -> int:
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
        ttl_ms = check_ttl_ms(ttl_ms)
        scope = check_scope(scope)

        def write(chunk: list[BulkPut], vectors: list[bytes | None]) -> tuple[int, BaseException | None]:
            self._check_open()
            per_shard: dict[str, deque[PutItem]] = {}
            for item, vector in zip(chunk, vectors, strict=True):
                put = PutItem(item.key, item.value, scope, vector, ttl_ms)
                per_shard.setdefault(self.ring.shard_for(item.key), deque()).append(put)
            # Threads of its own, not the fan-out pool: a long load must not leave searches waiting for workers.
            with ThreadPoolExecutor(max_workers=len(per_shard), thread_name_prefix="semcache-put-many") as pool:
                outcomes = list(pool.map(lambda part: self._put_in_batches(*part), per_shard.items()))
            return sum(count for count, _ in outcomes), next((e for _, e in outcomes if e is not None), None)

        return load_in_chunks(bulk_puts(items, self.limits), self._embedding, write)

    def _put_in_batches(self, shard_id: str, puts: deque[PutItem]) -> tuple[int, SemcacheError | None]:
        """Send one shard's part of a ``put_many`` chunk batch by batch, in order: how many were stored,
        and the error that stopped it (None when all were)."""
        stored = 0
        while puts:
            try:
                errors = self._send_puts(shard_id, take_batch(puts, _put_size))
            except SemcacheError as exc:  # the shard's (no quorum, unreachable), a lone put's own, or closed
                return stored, exc
            stored += errors.count(None)
            failure = next((error for error in errors if error is not None), None)
            if failure is not None:
                return stored, failure
        return stored, None

    def _send_puts(self, shard_id: str, items: list[PutItem]) -> list[SemcacheError | None]:
        """Send puts for one shard (queued by concurrent writers, or a ``put_many`` batch): one RPC, one error
        (or None) per put.

        A lone put goes as a plain ``put``.  A shard-level refusal of any put in
        a batch (not the leader, no quorum) retries the whole batch, as for a
        lone put; puts are idempotent, so resending the committed ones is harmless.
        """
        if len(items) == 1:
            (item,) = items
            self._on_shard(
                shard_id,
                lambda node: node.put(item.key, item.value, scope=item.scope, vector=item.vector, ttl_ms=item.ttl_ms),
                leader=True, timeout=self.request_timeout,
            )
            return [None]

        def call(node: NodeConnection) -> list[SemcacheError | None]:
            errors = node.put_many(items)
            retry = next((e for e in errors if isinstance(e, NotLeaderError | NoQuorumError)), None)
            if retry is not None:
                raise retry
            return errors

        return self._on_shard(shard_id, call, leader=True, timeout=self.request_timeout)

    def _send_searches(self, shard_id: str, queries: list[SearchQuery]) -> list[Hits | SemcacheError]:
        """Send searches that concurrent callers queued for one shard: one RPC, one answer per search.

        A lone search goes as a plain ``search``.
        """
        leader = self.read_from == "leader"
        if len(queries) == 1:
            (q,) = queries
            return [self._on_shard(
                shard_id,
                lambda node: node.search(q.vector, scope=q.scope, top_k=q.top_k, threshold=q.threshold,
                                         read_from=self.read_from),
                leader=leader, timeout=self.search_timeout,
            )]
        return self._on_shard(
            shard_id, lambda node: node.search_many(queries, read_from=self.read_from), leader=leader,
            timeout=self.search_timeout,
        )

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

    def scan(self, prefix: str = "", limit: int = 100) -> ShardResults[str]:
        """Keys starting with ``prefix`` over all shards, sorted, at most ``limit``.

        ``missing_shards`` on the result names shards that did not answer.
        """
        prefix, limit = check_scan_args(prefix, limit)
        answers, missing = self._fan_out(
            lambda node: node.scan(prefix, limit, read_from=self.read_from), timeout=self.search_timeout
        )
        keys = heapq.merge(*(sorted(keys) for keys in answers.values()))
        return ShardResults([k for _, k in zip(range(limit), keys, strict=False)], missing_shards=missing)

    def search(
        self,
        query: str | None,
        top_k: int = 5,
        threshold: float | None = None,
        *,
        scope: str | None = None,
        vector: np.ndarray | None = None,
    ) -> ShardResults[SearchResult]:
        """The ``top_k`` entries nearest to ``query`` over all shards, best first.

        Each shard returns its own top ``top_k``; the client keeps the best
        ``top_k`` of their union (ties broken by key, so the order is stable).
        ``missing_shards`` on the result names shards that did not answer
        within ``search_timeout``; their entries are simply absent.

        Raises:
            ShardUnavailableError: no shard answered.
        """
        self._check_open()
        check_search_args(top_k, threshold)
        scope = check_scope(scope)
        request = SearchQuery(search_vector(self._embedding, query, vector).tobytes(), scope, top_k, threshold)
        answers, missing = self._on_every_shard_at_once(
            lambda shard_id: self._searchers[shard_id].submit(request), timeout=self.search_timeout
        )
        hits = [
            SearchResult(key, value, float(similarity), shard_id)
            for shard_id, rows in answers.items()
            for key, value, similarity in rows
        ]
        best = heapq.nsmallest(top_k, hits, key=lambda hit: (-hit.similarity, hit.key))
        return ShardResults(best, missing_shards=missing)

    def _on_every_shard(self, call: Callable[[NodeConnection], int]) -> int:
        """A write on every shard (clear); fails if any shard fails, after trying them all."""
        self._check_open()
        futures = {
            shard_id: self._executor.submit(self._on_shard, shard_id, call, leader=True, timeout=self.request_timeout)
            for shard_id in self.ring.shard_ids
        }
        total = 0
        first_error: BaseException | None = None
        for future in futures.values():
            try:
                total += future.result()
            except ClusterError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return total

    def clear_scope(self, scope_prefix: str) -> int:
        """Remove every entry in scopes starting with ``scope_prefix`` on every shard; how many."""
        if not isinstance(scope_prefix, str) or not scope_prefix:
            raise InvalidInputError("scope_prefix must be a non-empty str (use clear_all() for everything)")
        return self._on_every_shard(lambda node: node.clear(scope_prefix))

    def clear_all(self) -> int:
        """Remove everything on every shard; returns how many entries were removed."""
        return self._on_every_shard(lambda node: node.clear(""))

    def stats(self) -> dict[str, Any]:
        """Per-shard stats from each leader plus totals; shards that did not answer are listed."""
        answers, missing = self._fan_out(lambda node: node.stats(), timeout=self.search_timeout)
        return {
            "node": "cluster",
            "shards": answers,
            "missing_shards": missing,
            "entries": sum(int(s.get("entries", 0)) for s in answers.values()),
            "model_id": self.model_id,
            "dim": self._embedding.dim,
            "read_from": self.read_from,
            "embedding_model_calls": self._embedding.model_calls,
            "embedding_memo_hits": self._embedding.memo_hits,
        }

    def cluster_stats(self) -> dict[str, dict[str, Any]]:
        """Raft state of every replica: ``{shard: {replica: health dict or {"error": ...}}}``.

        A replica's health dict has its role, the leader it knows, term, commit
        index, applied index and entries (see ``NodeClient.health``).
        """
        self._check_open()
        jobs = {
            (route.id, replica.id): self._executor.submit(self._health_of, replica.rpc)
            for route in self._routes.values()
            for replica in route.replicas
        }
        out: dict[str, dict[str, Any]] = {route_id: {} for route_id in self._routes}
        for (shard_id, replica_id), job in jobs.items():
            out[shard_id][replica_id] = job.result()
        return out

    def _health_of(self, address: str) -> dict[str, Any]:
        try:
            return {"rpc": address, **self._connection(address).health()}
        except ClusterError as exc:
            return {"rpc": address, "healthy": False, "error": f"{type(exc).__name__}: {exc}"}

    def health_check(self) -> dict[str, Any]:
        """Whether every shard has a leader that answers.

        Returns:
            ``{"healthy": bool, "shards": {shard: {"leader": addr|None, "replicas_up": n,
            "replicas": n}}}``; ``healthy`` is True when every shard has a reachable leader.
        """
        shards: dict[str, dict[str, Any]] = {}
        for shard_id, replicas in self.cluster_stats().items():
            leaders = [h["rpc"] for h in replicas.values() if h.get("role") == "leader"]
            up = sum("error" not in h for h in replicas.values())
            shards[shard_id] = {"leader": leaders[0] if leaders else None, "replicas_up": up, "replicas": len(replicas)}
            if leaders:
                self._routes[shard_id].leader = leaders[0]
        return {"healthy": all(s["leader"] for s in shards.values()), "shards": shards}

    def close(self) -> None:
        """Close every connection and the fan-out threads; later calls raise ClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections.values())
            self._connections.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for connection in connections:
            with contextlib.suppress(Exception):  # best effort: the node may be gone
                connection.close()

    def __enter__(self) -> DistributedSemanticKV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DistributedSemanticKV(shards={list(self.ring.shard_ids)}, model={self.model_id})"
