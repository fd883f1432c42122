"""The plumbing both adapters share: argument checks, their cache front, their counters.

An adapter (:mod:`~semcache.integrations.openai`,
:mod:`~semcache.integrations.langchain`) turns a framework's request into a
prompt, a scope and an :class:`~semcache._cache.cache.Address`, and a cached
record back into the framework's objects.  What lies between is the same for
both and lives here, in :class:`CacheFront`:

* the :class:`~semcache.SemanticCache` underneath, made on first use when none
  was given (loading the packaged model then, not at import), and the
  :class:`~semcache.integrations._writes.WriteBehind` queue in front of it;
* the lookup: a pending write first (read-your-writes), else
  :meth:`~semcache.SemanticCache.lookup_at`; a lookup that raises a semcache
  error is logged at WARNING, counted in ``lookup_errors`` and answered as a
  miss, so the cache failing never fails the model call;
* the exact-hit memos (:mod:`semcache.integrations._memo`) and whether a hit's
  response is shared (so an answer built from it must be a copy);
* thread-safe counters (:class:`AdapterCounters`).

>>> import logging
>>> from dataclasses import dataclass
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> @dataclass
... class Stats:
...     hits: int = 0
...     pending_hits: int = 0
...     lookup_errors: int = 0
...     stores: int = 0
...     write_failures: int = 0
>>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
>>> front = CacheFront(cache, Stats(), log=logging.getLogger("example"), write_behind=False)
>>> _ = front.writes.submit("What is 2+2?", "4", scope="math")  # stored before returning: write_behind=False
>>> front.find(front.cache.address("What is 2+2?", "math")).response, front.stats.stores
('4', 1)
>>> front.find(front.cache.address("What is 3+3?", "math")) is None
True
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from semcache._cache.cache import Address, CacheHit, SemanticCache
from semcache._engine.inputs import similarity
from semcache.errors import ConfigurationError, SemcacheError

from ._memo import DEFAULT_MEMO_SIZE, AnswerMemo, HitMemo
from ._writes import WriteBehind

__all__ = ["AdapterCounters", "CacheFront", "check_cache", "check_threshold", "default_cache"]


def check_cache(cache: object) -> SemanticCache | None:
    """``cache`` if it is a :class:`~semcache.SemanticCache` or None.

    Raises:
        ConfigurationError: anything else (a backend, a path...).
    """
    if cache is not None and not isinstance(cache, SemanticCache):
        raise ConfigurationError(f"cache must be a SemanticCache or None, got {type(cache).__name__}")
    return cache


def check_threshold(threshold: object) -> float | None:
    """An adapter's threshold override: None (the cache's own) or a similarity in ``[0, 1]``.

    Raises:
        InvalidInputError: anything else.
    """
    return None if threshold is None else similarity(threshold, "threshold", lowest=0.0)


def default_cache() -> SemanticCache:
    """The cache an adapter makes when given none: embedded, with the packaged all-MiniLM-L6-v2."""
    return SemanticCache()


class _Counters(Protocol):
    """The counters every adapter's stats have (the rest are its own)."""

    pending_hits: int
    lookup_errors: int
    stores: int
    write_failures: int


StatsT = TypeVar("StatsT", bound=_Counters)
AnswerT = TypeVar("AnswerT")


class AdapterCounters(Generic[StatsT]):
    """An adapter's counters: thread-safe increments, and snapshots that add the write-behind queue's.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Stats:
    ...     hits: int = 0
    ...     stores: int = 0
    ...     write_failures: int = 0
    >>> counters = AdapterCounters(Stats())
    >>> counters.count("hits")
    >>> counters.snapshot(None)
    Stats(hits=1, stores=0, write_failures=0)
    """

    def __init__(self, stats: StatsT) -> None:
        self._stats = stats
        self._lock = threading.Lock()

    def count(self, name: str) -> None:
        """Add one to the counter ``name``."""
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    def snapshot(self, writes: WriteBehind | None) -> StatsT:
        """A copy of the counters, with ``stores`` and ``write_failures`` read from ``writes``."""
        with self._lock:
            snapshot = copy.copy(self._stats)  # the counters are ints: a shallow copy is a snapshot
        if writes is not None:
            snapshot.stores, snapshot.write_failures = writes.stores, writes.failures
        return snapshot


class CacheFront(Generic[StatsT]):
    """One adapter's way into its cache: the cache, the write-behind queue, the memos, the counters.

    Args:
        cache: the :class:`~semcache.SemanticCache` given to the adapter, or
            None for :func:`default_cache`, made on first use.
        stats: the adapter's counters, zero (a dataclass with at least
            ``pending_hits``, ``lookup_errors``, ``stores``, ``write_failures``).
        log: the adapter's logger (lookup failures are logged there).
        threshold: overrides the cache's similarity threshold in lookups.
        ttl: seconds each stored answer lives (None: the cache's default).
        write_behind: store in a background thread, or before returning.
        memo_size: exact hits remembered (:class:`~semcache._cache.cache.HitMemo`,
            :class:`~semcache.integrations._memo.AnswerMemo`).
        place: the cache the adapter's entries live in, given the base cache
            (default: the base cache itself; the LangChain adapter's own namespace).
    """

    def __init__(
        self,
        cache: SemanticCache | None,
        stats: StatsT,
        *,
        log: logging.Logger,
        threshold: float | None = None,
        ttl: float | None = None,
        write_behind: bool = True,
        memo_size: int = DEFAULT_MEMO_SIZE,
        place: Callable[[SemanticCache], SemanticCache] | None = None,
    ) -> None:
        self._base = check_cache(cache)
        self.threshold = check_threshold(threshold)
        self.ttl = ttl
        self.write_behind = write_behind
        self.hits = HitMemo(memo_size)
        self.answers = AnswerMemo(memo_size)
        self._counters = AdapterCounters(stats)
        self.count = self._counters.count  # add one to a counter: bound once, it is on every call's path
        self._log = log
        self._place = place
        self._lock = threading.Lock()
        self._writes: WriteBehind | None = None

    @property
    def base(self) -> SemanticCache:
        """The cache given to the adapter, or the default one (made now, if not yet)."""
        if self._base is None:
            with self._lock:
                if self._base is None:
                    self._base = default_cache()
        return self._base

    @property
    def exists(self) -> bool:
        """Whether the cache is there already: making the default one loads a model, which some callers must not."""
        return self._base is not None

    @property
    def writes(self) -> WriteBehind:
        """The write-behind queue in front of :attr:`cache` (made with it, on first use)."""
        if self._writes is None:
            base = self.base
            with self._lock:
                if self._writes is None:
                    cache = base if self._place is None else self._place(base)
                    self._writes = WriteBehind(cache, enabled=self.write_behind, ttl=self.ttl)
        return self._writes

    @property
    def cache(self) -> SemanticCache:
        """The cache the adapter's entries live in."""
        return self.writes.cache

    @property
    def stats(self) -> StatsT:
        """A snapshot of the counters."""
        return self._counters.snapshot(self._writes)


    def find(self, address: Address) -> CacheHit | None:
        """The answer stored at ``address``: a pending write first, then the cache; None on a miss.

        A lookup that raises a semcache error (a shard down, a prompt too long
        to embed) is logged at WARNING, counted in ``lookup_errors`` and
        answered as a miss: the cache failing must not fail the model call.
        """
        writes = self.writes
        pending = writes.pending_at(address.key)
        if pending is not None:
            self.count("pending_hits")
            return pending
        try:
            return writes.cache.lookup_at(address, threshold=self.threshold, memo=self.hits)
        except SemcacheError as exc:
            self.count("lookup_errors")
            self._log.warning("semcache: lookup failed (%s: %s); treating it as a miss", type(exc).__name__, exc)
            return None

    def pending(self, address: Address) -> CacheHit | None:
        """Only the write-behind map: an answer whose store has not landed yet (counted), or None."""
        hit = self.writes.pending_at(address.key)
        if hit is not None:
            self.count("pending_hits")
        return hit

    def shared(self, hit: CacheHit) -> bool:
        """Whether ``hit.response`` is shared (a remembered hit, a pending write): build answers from a copy."""
        return self.hits.remembers(hit) or self.writes.holds(hit)

    def remember(self, hit: CacheHit, serialised: Any, parse: Callable[[Any], AnswerT]) -> AnswerT:
        """A fresh answer, ``parse(serialised)``, also remembered for ``hit``'s next exact hits if ``hit`` is.

        ``serialised`` is a copy of the answer taken before any caller could
        touch it; every later :meth:`~semcache.integrations._memo.AnswerMemo.get`
        on :attr:`answers` parses a new one from it.
        """
        answer = parse(serialised)
        if self.hits.remembers(hit):
            self.answers.put(hit, serialised, parse)
        return answer

    def report_wrong_hit(self, hit: CacheHit | str) -> bool:
        """Report that ``hit`` (or the entry at its key) served a wrong answer (see
        :meth:`~semcache.SemanticCache.report_wrong_hit`): deleted, counted, its pair recorded.

        Pending writes land first, so the entry reported is the one stored.
        """
        self.flush()
        return self.cache.report_wrong_hit(hit)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for pending writes; True when none is left."""
        return self._writes is None or self._writes.flush(timeout)

    def close(self) -> None:
        """Finish pending writes and stop the writer thread (the cache itself stays open)."""
        if self._writes is not None:
            self._writes.close()
