"""``OpenAICache``: the caching core behind ``wrap(client)`` and ``@semantic_cache``.

It owns the adapter's settings, its :class:`~semcache.integrations._adapter.CacheFront`
(the cache, the write-behind queue, the memos, the counters), the memo of
request plans and the flights of identical concurrent misses.  What a call
does with them is decided in :mod:`._flow`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from semcache._cache.cache import Address, CacheHit, Scope, SemanticCache, canonical_scope
from semcache._cache.lru import LRU
from semcache._cache.single_flight import SingleFlight
from semcache.errors import InvalidInputError

from .._adapter import CacheFront
from .._memo import DEFAULT_MEMO_SIZE, MAX_PLAN_CHARS, fingerprint
from .._writes import WriteBehind
from ._answers import answer_for, hit_of_answer, payload_of
from ._flow import wrap_call
from ._plan import Plan, Sampling, check_sampling, given, request_scope, sampling_allows
from ._shapes import chunks_to_completion
from ._streams import Recorder, RecordingAsyncStream, RecordingStream, is_stream

__all__ = ["OpenAICache", "OpenAICacheStats"]

log = logging.getLogger("semcache.integrations.openai")


@dataclass
class OpenAICacheStats:
    """What the adapter did, since it was created."""

    hits: int = 0
    pending_hits: int = 0  # served from the write-behind map before the store landed
    misses: int = 0
    bypassed: int = 0  # not cacheable (sampling policy, cache_skip, no user message, non-JSON params)
    refreshes: int = 0
    stores: int = 0
    write_failures: int = 0
    streams_discarded: int = 0  # streamed misses not stored: broken, abandoned or incomplete
    lookup_errors: int = 0  # lookups that raised (a cluster shard down, a prompt too long to embed...)
    single_flight_waits: int = 0  # misses that waited for an identical call in flight instead of calling upstream


class OpenAICache:
    """The caching core shared by :func:`wrap` and :func:`semantic_cache`.

    Args:
        cache: the :class:`~semcache.SemanticCache` underneath; default an
            embedded one with the packaged MiniLM, made on first use.
        threshold: overrides the cache's similarity threshold for these calls.
        scope: added to every call's scope (a tenant, an app version...).
        ttl: seconds an answer stays cached (default: the cache's).
        sampling: which requests are cached (see the module docs).
        write_behind: store in a background thread (default); False stores
            before returning, which is slower but needs no ``flush()``.
        memo_size: recent requests and exact hits remembered for the fast path.
    """

    def __init__(
        self,
        cache: SemanticCache | None = None,
        *,
        threshold: float | None = None,
        scope: Scope = None,
        ttl: float | None = None,
        sampling: Sampling = "deterministic",
        write_behind: bool = True,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        self._front = CacheFront(
            cache,
            OpenAICacheStats(),
            log=log,
            threshold=threshold,
            ttl=ttl,
            write_behind=write_behind,
            memo_size=memo_size,
        )
        self.count = self._front.count  # add one to a counter of stats
        check_sampling(sampling)
        canonical_scope(scope)  # fail now, not on the first call
        self.sampling = sampling
        self._scope = scope
        self._plans: LRU[bytes, Plan] = LRU(memo_size)
        self.flights: SingleFlight[None] = SingleFlight()  # identical concurrent misses, by cache key
        self._warned = False
        self._last = threading.local()  # the last hit served to each thread (its attribute "hit")

    # ------------------------------------------------------------ settings
    @property
    def scope(self) -> Scope:
        """Added to every call's scope; fixed at construction (remembered plans include it)."""
        return self._scope

    @property
    def threshold(self) -> float | None:
        """Overrides the cache's similarity threshold (None: the cache's own)."""
        return self._front.threshold

    @property
    def ttl(self) -> float | None:
        """Seconds an answer stays cached (None: the cache's default)."""
        return self._front.ttl

    @property
    def write_behind(self) -> bool:
        """Whether answers are stored in the background (else before the call returns)."""
        return self._front.write_behind

    @property
    def cache(self) -> SemanticCache:
        """The cache underneath (the default one is made on first use, loading the model then)."""
        return self._front.cache

    @property
    def writes(self) -> WriteBehind:
        """The write-behind queue in front of :attr:`cache`."""
        return self._front.writes

    @property
    def stats(self) -> OpenAICacheStats:
        """A snapshot of the counters."""
        return self._front.stats


    # ------------------------------------------------------------- planning
    def plan(self, endpoint: str, request: Mapping[str, Any], controls: Mapping[str, Any]) -> Plan | None:
        """Where the answer to ``request`` is cached, or None when it must go upstream uncached."""
        streamed_response = endpoint == "responses" and given(request, "stream")
        if controls.get("cache_skip") or streamed_response or not sampling_allows(self.sampling, request):
            self.count("bypassed")
            return None
        # The same request again (values and types equal) has the same plan; the sampling
        # policy above is still asked every time, since a callable one may change its mind.
        memo_key = fingerprint((endpoint, request, controls))
        remembered = None if memo_key is None else self._plans.get(memo_key)
        if remembered is not None:
            return remembered
        split = request_scope(endpoint, request, controls, adapter_scope=self.scope)
        if split is None:
            self.count("bypassed")
            return None
        prompt, scope = split
        try:
            # Canonicalised once here; the cache takes the text as a str scope, cheap to hash again.
            scope_text = canonical_scope(scope)
        except InvalidInputError as exc:
            if not self._warned:  # once: a decorated function taking a client object would never cache
                self._warned = True
                log.warning("semcache: %s request not cacheable (%s); such calls go upstream uncached", endpoint, exc)
            self.count("bypassed")
            return None
        stream_options = request.get("stream_options") or {}
        # Only an existing cache gives the address now: making the default one loads the model,
        # which must not happen here, on the event loop of an async caller.
        plan = Plan(
            endpoint=endpoint,
            prompt=prompt,
            scope=scope_text,
            stream=given(request, "stream"),
            include_usage=bool(isinstance(stream_options, Mapping) and stream_options.get("include_usage")),
            refresh=bool(controls.get("cache_refresh")),
            address=self.cache.address(prompt, scope_text) if self._front.exists else None,
        )
        if memo_key is not None and plan.address is not None and len(prompt) + len(scope_text) <= MAX_PLAN_CHARS:
            self._plans.put(memo_key, plan)
        return plan

    def address(self, plan: Plan) -> Address:
        """Where ``plan``'s answer lives in the cache."""
        return plan.address or self.cache.address(plan.prompt, plan.scope)

    # -------------------------------------------------------------- answers
    def find(self, plan: Plan) -> CacheHit | None:
        """The cached answer for ``plan``: a pending write first, then the cache (a failing lookup: a miss)."""
        return self._front.find(self.address(plan))

    def replay(self, plan: Plan, hit: CacheHit, *, asynchronous: bool) -> Any:
        """Turn a hit into what the caller expects: an openai object, a stream of chunks, or a value.

        Returns None (a miss) for an entry this adapter did not write.
        """
        answer = answer_for(plan, hit, self._front, asynchronous=asynchronous)
        if answer is not None:
            self.count("hits")
            self._last.hit = hit  # what report_wrong_hit() reports when given nothing
        return answer

    def report_wrong_hit(self, answer: Any = None) -> bool:
        """Report that a cached answer was wrong: its entry is deleted, counted, and the pair recorded.

        Args:
            answer: the cached ``ChatCompletion``, ``Response`` or chunk (their
                ``semcache`` marker names the entry), a :class:`~semcache.CacheHit`
                or an entry's key; None (for a decorated function returning plain
                values): the last hit this thread was served.

        Returns:
            Whether the entry was still stored.

        Raises:
            InvalidInputError: ``answer`` was not served from the cache.
        """
        if answer is None:
            hit = getattr(self._last, "hit", None)
        else:
            hit = answer if isinstance(answer, CacheHit | str) else hit_of_answer(answer)
        if hit is None:
            raise InvalidInputError("report_wrong_hit needs an answer served from the cache (is_cached() is False)")
        return self._front.report_wrong_hit(hit)

    def answer(self, plan: Plan, *, asynchronous: bool) -> Any:
        """The cached answer for ``plan``, ready to return, or None on a miss.  May embed the prompt: blocking."""
        hit = self.find(plan)
        return None if hit is None else self.replay(plan, hit, asynchronous=asynchronous)

    def pending_answer(self, plan: Plan, *, asynchronous: bool) -> Any:
        """The answer a just-landed identical call left in the write-behind map, or None.  Never blocks."""
        hit = self._front.pending(self.address(plan))
        return None if hit is None else self.replay(plan, hit, asynchronous=asynchronous)

    # -------------------------------------------------------------- records
    def record(self, plan: Plan, result: Any, *, asynchronous: bool) -> Any:
        """Give a fresh ``result`` back, storing it (write-behind) or, for a stream, arranging to."""
        self.count("refreshes" if plan.refresh else "misses")
        if plan.stream and is_stream(result):
            recorder = Recorder(functools.partial(self._stream_done, plan))
            return RecordingAsyncStream(result, recorder) if asynchronous else RecordingStream(result, recorder)
        payload = payload_of(result)
        if payload is None:
            log.debug("semcache: %s result of type %s is not cacheable", plan.endpoint, type(result).__name__)
        else:
            self.submit(plan, payload)
        return result

    def _stream_done(self, plan: Plan, chunks: list[Any] | None) -> None:
        """A streamed miss ended: store the completion its chunks add up to, or count it discarded."""
        try:
            dumped = [c.model_dump(mode="json") if hasattr(c, "model_dump") else dict(c) for c in chunks or []]
            completion = chunks_to_completion(dumped)
        except (TypeError, ValueError, KeyError) as exc:  # not chat.completion.chunk objects: not cacheable
            log.warning("semcache: a %s stream could not be reassembled (%s); not cached", plan.endpoint, exc)
            completion = None
        if completion is None:
            self.count("streams_discarded")
            return
        self.submit(plan, {"type": "chat.completion", "completion": completion})

    def submit(self, plan: Plan, payload: dict[str, Any]) -> None:
        """Store ``payload`` for ``plan``: visible to :meth:`find` at once, persisted in the background."""
        self.writes.submit(plan.prompt, payload, scope=plan.scope, metadata={"endpoint": plan.endpoint})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for pending writes; True when none is left."""
        return self._front.flush(timeout)

    def close(self) -> None:
        """Finish pending writes and stop the writer thread (the cache itself stays open)."""
        self._front.close()

    # ------------------------------------------------------------ wrapping
    def wrap_call(self, fn: Callable[..., Any], endpoint: str, request_of: Callable[..., dict[str, Any]]) -> Any:
        """``fn`` with caching; ``request_of(*args, **kwargs)`` names the request it makes (see :mod:`._flow`)."""
        return wrap_call(self, fn, endpoint, request_of)
