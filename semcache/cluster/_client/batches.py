"""What one RPC to a shard carries: a lone put or a ``put_many`` batch, a lone search or a ``search_many``.

Concurrent callers' requests to one shard are queued by a per-shard
:class:`~semcache.cluster._coalesce.Combiner`, which hands them here as a batch;
``put_many`` hands its own batches.  A lone request goes as the plain action
(``put``, ``search``), several as one batched action, each through the
shard's retry loop (:mod:`semcache.cluster._client.retry`).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from semcache.cluster._client.connections import NodeConnection
from semcache.cluster._client.retry import ShardCaller
from semcache.cluster._coalesce import Combiner, take_batch
from semcache.cluster._wire import Hits, PutItem, SearchQuery
from semcache.errors import NoQuorumError, NotLeaderError, SemcacheError, ShardUnavailableError


def put_size(item: PutItem) -> int:
    """A put's size in a batch (for the batch's byte bound)."""
    return item.size


def query_size(query: SearchQuery) -> int:
    """A search's size in a batch (for the batch's byte bound)."""
    return len(query.vector)


def shard_unanswering(error: BaseException) -> bool:
    """An error after which requests queued for the same shard fail too (it already took a whole timeout)."""
    return isinstance(error, ShardUnavailableError | NoQuorumError)


class BatchSender:
    """Sends batches of puts and searches to shards through the retry loop.

    Args:
        caller: runs a call on a shard with retries.
        read_from: ``"leader"`` or ``"any"``, for searches.
        request_timeout: seconds a batch of puts keeps retrying.
        search_timeout: seconds a batch of searches keeps retrying.
    """

    def __init__(self, caller: ShardCaller, *, read_from: str, request_timeout: float, search_timeout: float) -> None:
        self._caller = caller
        self._read_from = read_from
        self._request_timeout = request_timeout
        self._search_timeout = search_timeout

    def send_puts(self, shard_id: str, items: list[PutItem]) -> list[SemcacheError | None]:
        """Send puts for one shard (queued by concurrent writers, or a ``put_many`` batch): one RPC, one error
        (or None) per put.

        A lone put goes as a plain ``put``.  A shard-level refusal of any put in
        a batch (not the leader, no quorum) retries the whole batch, as for a
        lone put; puts are idempotent, so resending the committed ones is harmless.
        """
        if len(items) == 1:
            (item,) = items
            self._caller.run(
                shard_id,
                lambda node: node.put(item.key, item.value, scope=item.scope, vector=item.vector, ttl_ms=item.ttl_ms),
                leader=True, timeout=self._request_timeout,
            )
            return [None]

        def call(node: NodeConnection) -> list[SemcacheError | None]:
            errors = node.put_many(items)
            retry = next((e for e in errors if isinstance(e, NotLeaderError | NoQuorumError)), None)
            if retry is not None:
                raise retry
            return errors

        return self._caller.run(shard_id, call, leader=True, timeout=self._request_timeout)

    def put_combiners(self, shard_ids: Iterable[str]) -> dict[str, Combiner[PutItem, None]]:
        """Per shard, the combiner that lets concurrent puts share ``put_many`` RPCs."""
        return {
            shard_id: Combiner[PutItem, None](functools.partial(self.send_puts, shard_id), size=put_size,
                                              fails_queued=shard_unanswering)
            for shard_id in shard_ids
        }

    def search_combiners(self, shard_ids: Iterable[str]) -> dict[str, Combiner[SearchQuery, Hits]]:
        """Per shard, the combiner that lets concurrent searches share ``search_many`` RPCs."""
        return {
            shard_id: Combiner[SearchQuery, Hits](functools.partial(self.send_searches, shard_id), size=query_size,
                                                  fails_queued=shard_unanswering)
            for shard_id in shard_ids
        }

    def put_on_shards(
        self, puts: Iterable[PutItem], shard_for: Callable[[str], str]
    ) -> tuple[int, SemcacheError | None]:
        """Send each shard's puts (``shard_for(key)``) in order, the shards in parallel: how many were stored, and
        the first error."""
        per_shard: dict[str, deque[PutItem]] = {}
        for put in puts:
            per_shard.setdefault(shard_for(put.key), deque()).append(put)
        # Threads of its own, not the fan-out pool: a long load must not leave searches waiting for workers.
        with ThreadPoolExecutor(max_workers=len(per_shard), thread_name_prefix="semcache-put-many") as pool:
            outcomes = list(pool.map(lambda part: self.put_in_order(*part), per_shard.items()))
        return sum(count for count, _ in outcomes), next((e for _, e in outcomes if e is not None), None)

    def put_in_order(self, shard_id: str, puts: deque[PutItem]) -> tuple[int, SemcacheError | None]:
        """Send one shard's part of a ``put_many`` chunk batch by batch, in order: how many were stored,
        and the error that stopped it (None when all were)."""
        stored = 0
        while puts:
            try:
                errors = self.send_puts(shard_id, take_batch(puts, put_size))
            except SemcacheError as exc:  # the shard's (no quorum, unreachable), a lone put's own, or closed
                return stored, exc
            stored += errors.count(None)
            failure = next((error for error in errors if error is not None), None)
            if failure is not None:
                return stored, failure
        return stored, None

    def send_searches(self, shard_id: str, queries: list[SearchQuery]) -> list[Hits | SemcacheError]:
        """Send searches that concurrent callers queued for one shard: one RPC, one answer per search.

        A lone search goes as a plain ``search``.
        """
        leader = self._read_from == "leader"
        if len(queries) == 1:
            (q,) = queries
            return [self._caller.run(
                shard_id,
                lambda node: node.search(q.vector, scope=q.scope, top_k=q.top_k, threshold=q.threshold,
                                         read_from=self._read_from),
                leader=leader, timeout=self._search_timeout,
            )]
        return self._caller.run(
            shard_id, lambda node: node.search_many(queries, read_from=self._read_from), leader=leader,
            timeout=self._search_timeout,
        )
