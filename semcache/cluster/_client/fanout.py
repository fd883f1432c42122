"""Fan-out: one call per shard, every shard at once, within a timeout; and the merged results it gives.

:meth:`FanOut.run` runs ``per_shard(shard_id)`` for every shard in parallel
(the first in the calling thread, which saves a thread hand-off per search,
all of it with one shard) and waits up to the timeout plus a grace (one RPC
started just before the deadline).  A shard that raised an operational
:class:`~semcache.errors.ClusterError`, or did not finish, is *missing*.  A
misuse error or a refused token raises at once: no shard would answer
differently.  The :class:`ShardAnswers` it returns is read one of two ways:

* :meth:`ShardAnswers.partial` (search, scan, stats): the answers and the
  missing shards; an error only when no shard answered;
* :meth:`ShardAnswers.complete` (clear): every shard must answer, else the
  first shard's error.

>>> fan_out = FanOut(max_workers=2, grace=1.0)
>>> outcome = fan_out.run(["shard-0", "shard-1"], lambda shard_id: shard_id.upper(), timeout=1.0)
>>> outcome.partial()
({'shard-0': 'SHARD-0', 'shard-1': 'SHARD-1'}, [])
>>> fan_out.close()
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from semcache._engine.backend import SearchResult
from semcache.cluster._wire import Hits
from semcache.errors import AuthenticationError, ClusterError, ShardUnavailableError

T = TypeVar("T")


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


def merge_keys(answers: dict[str, list[str]], limit: int, missing: Sequence[str]) -> ShardResults[str]:
    """Every shard's scanned keys as one sorted list of at most ``limit``.

    >>> merge_keys({"shard-0": ["b", "d"], "shard-1": ["c", "a"]}, 3, missing=["shard-2"])
    ['a', 'b', 'c']
    """
    keys = heapq.merge(*(sorted(keys) for keys in answers.values()))
    return ShardResults([k for _, k in zip(range(limit), keys, strict=False)], missing_shards=missing)


def merge_hits(answers: dict[str, Hits], top_k: int, missing: Sequence[str]) -> ShardResults[SearchResult]:
    """The best ``top_k`` of every shard's hits, best first (ties broken by key, so the order is stable)."""
    hits = [
        SearchResult(key, value, float(similarity), shard_id)
        for shard_id, rows in answers.items()
        for key, value, similarity in rows
    ]
    best = heapq.nsmallest(top_k, hits, key=lambda hit: (-hit.similarity, hit.key))
    return ShardResults(best, missing_shards=missing)


@dataclass
class ShardAnswers(Generic[T]):
    """What a fan-out got: each answering shard's answer, and why the others are missing (None: no answer in time)."""

    timeout: float
    answers: dict[str, T] = field(default_factory=dict)
    failures: dict[str, ClusterError | None] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return list(self.failures)

    def partial(self) -> tuple[dict[str, T], list[str]]:
        """The answers and the missing shards.

        Raises:
            ShardUnavailableError: no shard answered.
        """
        if not self.answers:
            raise ShardUnavailableError(f"no shard answered within {self.timeout:.1f}s: {sorted(self.missing)}")
        return self.answers, self.missing

    def complete(self) -> dict[str, T]:
        """Every shard's answer.

        Raises:
            ClusterError: the first missing shard's error (all were tried).
        """
        for shard_id, error in self.failures.items():
            if error is not None:
                raise error
            raise ShardUnavailableError(f"shard {shard_id} did not answer within {self.timeout:.1f}s",
                                        shard_id=shard_id)
        return self.answers


class FanOut:
    """Runs a call on every shard in parallel (owns the worker threads).

    Args:
        max_workers: threads for the shards other than the first.
        grace: seconds waited past the timeout (one RPC's own timeout).
    """

    def __init__(self, max_workers: int, *, grace: float) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="semcache-fanout")
        self._grace = grace

    def run(self, targets: Sequence[str], per_target: Callable[[str], T], *, timeout: float) -> ShardAnswers[T]:
        """Run ``per_target(target)`` for every target (a shard id; for health, a replica's address) at once,
        and wait for them up to ``timeout`` (plus the grace).

        Raises:
            SemcacheError: a target raised a misuse error or refused the token.
        """
        first, *others = targets
        futures: dict[str, Future[T]] = {target: self._executor.submit(per_target, target) for target in others}
        outcomes: dict[str, T | BaseException | None] = {}
        try:
            outcomes[first] = per_target(first)
        except ClusterError as exc:
            outcomes[first] = exc
        if futures:
            wait(futures.values(), timeout=max(0.0, timeout + self._grace))
        for target, future in futures.items():
            outcomes[target] = (future.exception() or future.result()) if future.done() else None
        result = ShardAnswers[T](timeout)
        for target in targets:
            outcome = outcomes[target]
            if outcome is None or isinstance(outcome, BaseException):
                result.failures[target] = _operational(outcome)
            else:
                result.answers[target] = outcome
        return result

    def close(self) -> None:
        """Stop the threads; queued calls are cancelled, running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _operational(outcome: BaseException | None) -> ClusterError | None:
    """A shard's failure as a reason to leave it out; a misuse error or a refused token is raised instead."""
    if outcome is None:
        return None
    if isinstance(outcome, ClusterError) and not isinstance(outcome, AuthenticationError):
        return outcome
    raise outcome  # misuse or a refused token: no shard would answer differently
