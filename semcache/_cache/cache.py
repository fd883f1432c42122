"""``SemanticCache``: the LLM-cache layer over any :class:`~semcache._engine.backend.Backend`.

>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()), threshold=0.8)
>>> key = cache.store("What is the capital of France?", "Paris", scope={"model": "gpt-4o"})
>>> cache.lookup("What is the capital of  France? ", scope={"model": "gpt-4o"}).exact
True
>>> cache.lookup("What is the capital of France?", scope={"model": "gpt-3.5"}) is None
True
>>> cache.lookup("   ", scope={"model": "gpt-4o"})
Traceback (most recent call last):
    ...
semcache.errors.InvalidInputError: prompt must not be empty

How a lookup decides:

1. **Scope.** The scope (a str or any JSON-like mapping: tenant, model,
   parameters, system prompt) is canonicalised and hashed; the hash names a
   separate vector index, so another scope's entries are never even seen
   (:mod:`semcache._cache.keys`).
2. **Exact path.** The normalised prompt (NFKC, whitespace collapsed) hashes
   to a key; a stored entry under that key is an exact hit, found without
   computing an embedding.
3. **Semantic path.** Otherwise the prompt is embedded and the nearest entry
   of the scope is judged (:mod:`semcache._cache.decision`): by the learned
   verifier at the cache's operating point (the default with the packaged
   all-MiniLM-L6-v2), or by a cosine threshold and the hit guard.

The parts: :mod:`~semcache._cache.keys` (scopes, prompts, keys),
:mod:`~semcache._cache.lookup` (both paths, counted), :mod:`~semcache._cache.storing`
(what a store writes), :mod:`~semcache._cache.compute` (``get_or_compute``'s
single flight), :mod:`~semcache._cache.feedback` (wrong-hit reports, the refitted point).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from semcache._cache import feedback
from semcache._cache.compute import ComputeOnce
from semcache._cache.decision import (
    DEFAULT_THRESHOLD,
    Decision,
    ThresholdDecision,
    VerifierDecision,
    choose_decision,
)
from semcache._cache.keys import (
    ALL_SCOPES,
    Address,
    Scope,
    _AllScopes,
    canonical_scope,
    check_namespace,
    check_prompt,
    entry_key,
    normalize_prompt,
    scope_id,
    ttl_ms,
)
from semcache._cache.lookup import Explanation, Lookups
from semcache._cache.memo import HitMemo
from semcache._cache.records import CacheHit
from semcache._cache.storing import write_entry, write_pairs
from semcache._engine.backend import Backend
from semcache._engine.inputs import similarity
from semcache.embeddings import BaseEmbedding, as_embedding
from semcache.errors import ConfigurationError

__all__ = [
    "ALL_SCOPES", "DEFAULT_NAMESPACE", "DEFAULT_THRESHOLD", "Address", "CacheHit", "CacheStats", "Explanation",
    "HitMemo", "Scope", "SemanticCache", "canonical_scope", "normalize_prompt",
]

DEFAULT_NAMESPACE = "semcache"


@dataclass
class CacheStats:
    """Counters since the cache was created."""

    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    guard_vetoes: int = 0
    verifier_refusals: int = 0  # nearest entries the verifier scored below the operating point
    stores: int = 0
    computes: int = 0
    single_flight_waits: int = 0
    wrong_hits_reported: int = 0
    vetoes_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class SemanticCache:
    """A semantic cache for LLM responses.

    Args:
        backend: where entries live; default an in-memory :class:`~semcache.SemanticKV`.
            A path is not a backend: pass ``SemanticKV("./dir")`` to persist.
        embedding: the embedder (default: the backend's; with no backend, the
            packaged all-MiniLM-L6-v2).  It must match the backend's model.
        threshold: decide semantic hits by this cosine threshold and the hit
            guard instead of the verifier (see :mod:`semcache._cache.decision`).
        ttl: default time to live in seconds (None: no expiry).
        namespace: prefix of this cache's keys and scopes; ``clear()`` drops only these.
        guard: with a cosine threshold, veto hits the hit guard flags.
        max_wrong_rate: the verifier's operating point: the wrong-hit rate it
            keeps to on its calibration data, a rate such as ``0.01`` or a preset
            (``"strict"`` 0.3 %, ``"balanced"`` 1 %, ``"loose"`` 3 %).  Default:
            the namespace's refitted point (``semcache calibrate --feedback``), else 1 %.

    Raises:
        ConfigurationError: a path given as the backend, an embedder that does not match the
            backend's, both ``threshold`` and ``max_wrong_rate``, a bad namespace.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        embedding: Any = None,
        threshold: float | None = None,
        ttl: float | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        guard: bool = True,
        max_wrong_rate: float | str | None = None,
    ) -> None:
        self.backend = _backend(backend, embedding)
        self.namespace = check_namespace(namespace)
        self.guard = guard
        self.default_ttl_ms = ttl_ms(ttl)
        self.decision = choose_decision(self.embedding, threshold=threshold, max_wrong_rate=max_wrong_rate,
                                        guard=guard)
        if threshold is None and max_wrong_rate is None and isinstance(self.decision, VerifierDecision):
            self.decision = feedback.refitted(self.decision, self.backend, self.namespace)
        self._start_counting()

    def _start_counting(self) -> None:
        """Fresh counters, and the paths that count into them (a :meth:`view` counts apart from its cache)."""
        self.stats = CacheStats()
        self._stats_lock = threading.Lock()
        self._lookups = Lookups(self.backend, self._count)
        self._misses = ComputeOnce(self.backend, self._count)

    @property
    def embedding(self) -> BaseEmbedding:
        return self.backend.embedding

    @property
    def threshold(self) -> float | None:
        """The cosine threshold when one decides semantic hits; None when the verifier does."""
        return self.decision.threshold if isinstance(self.decision, ThresholdDecision) else None

    def view(self, namespace: str) -> SemanticCache:
        """A cache over the same backend and settings, in another namespace (an adapter's own entries)."""
        other = SemanticCache.__new__(SemanticCache)
        other.__dict__.update(self.__dict__)
        other.namespace = check_namespace(namespace)
        other._start_counting()
        return other

    def _count(self, name: str, reason: str | None = None, amount: int = 1) -> None:
        """Add to a :class:`CacheStats` counter (and, for a guard veto, to its reason's), under the lock."""
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + amount)
            if reason:
                self.stats.vetoes_by_reason[reason] = self.stats.vetoes_by_reason.get(reason, 0) + 1

    # --------------------------------------------------------------- naming
    def scope_id(self, scope: Scope) -> str:
        """The backend scope (index partition) that ``scope`` maps to."""
        return scope_id(self.namespace, scope)

    def key_for(self, prompt: str, scope: Scope = None) -> str:
        """The backend key of ``prompt`` in ``scope`` (its exact-match address)."""
        return self.address(prompt, scope).key

    def address(self, prompt: str, scope: Scope = None) -> Address:
        """Where ``prompt`` lives in ``scope``: compute it once to look it up repeatedly with :meth:`lookup_at`.

        Raises:
            InvalidInputError: the prompt or scope is invalid.
        """
        normalized = normalize_prompt(check_prompt(prompt))
        scope = self.scope_id(scope)
        return Address(prompt, normalized, scope, entry_key(scope, normalized))

    # ------------------------------------------------------------ lookups
    def lookup(self, prompt: str, *, scope: Scope = None, threshold: float | None = None) -> CacheHit | None:
        """The cached answer for ``prompt`` in ``scope``, or None on a miss.

        Args:
            threshold: decide this call by this cosine threshold (and the hit guard) instead.
        """
        return self.lookup_at(self.address(prompt, scope), threshold=threshold)

    def lookup_at(
        self, address: Address, *, threshold: float | None = None, memo: HitMemo | None = None
    ) -> CacheHit | None:
        """:meth:`lookup` for an :meth:`address` computed earlier.

        Args:
            threshold: decide this call by this cosine threshold (and the hit guard) instead.
            memo: reuse exact hits decoded earlier while their stored bytes are
                unchanged (see :class:`HitMemo`); its hits are shared, read-only.
        """
        return self._lookups.find(address, self._decision_for(threshold), memo)

    def explain(self, prompt: str, *, scope: Scope = None, threshold: float | None = None) -> Explanation:
        """Look ``prompt`` up and say why it hit or missed: the nearest prompt, its similarity and score.

        It decides exactly as :meth:`lookup` does (and counts in :attr:`stats` as one).
        """
        decision = self._decision_for(threshold)
        return self._lookups.explain(self.address(prompt, scope), decision)

    def _decision_for(self, threshold: float | None) -> Decision:
        if threshold is None:
            return self.decision
        return ThresholdDecision(similarity(threshold, "threshold", lowest=0.0), self.guard)

    # ------------------------------------------------------------- storing
    def store(
        self,
        prompt: str,
        response: Any,
        *,
        scope: Scope = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Cache ``response`` (str, bytes or JSON-serialisable) for ``prompt``; returns the key.

        Raises:
            InvalidInputError: the prompt, scope, TTL, response or metadata is invalid.
        """
        address = self.address(prompt, scope)
        write_entry(self.backend, address, response, metadata, self.default_ttl_ms if ttl is None else ttl_ms(ttl))
        self._count("stores")
        return address.key

    def store_many(
        self,
        pairs: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        scope: Scope = None,
        ttl: float | None = None,
    ) -> list[str]:
        """Cache many ``(prompt, response)`` pairs at once, to warm a cache from logs or a dataset; returns the keys.

        ``pairs`` maps prompts to responses or holds ``(prompt, response)``
        tuples.  The prompts are embedded in batches and the entries written
        with the backend's ``put_many``: about twice as fast as a
        :meth:`store` each with all-MiniLM-L6-v2.  Each entry is then found as :meth:`store`'s would be.

        >>> from semcache import SemanticKV
        >>> from semcache.embeddings import HashEmbedding
        >>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
        >>> len(cache.store_many({"What is 2 + 2?": "4", "Capital of France?": "Paris"}, scope={"model": "m"}))
        2
        >>> cache.lookup("capital of france?", scope={"model": "m"}).response
        'Paris'

        Raises:
            InvalidInputError: a bad pair (named by its position), scope or TTL; nothing is stored.
        """
        scope_name = self.scope_id(scope)
        keys = write_pairs(self.backend, pairs, scope_name, self.default_ttl_ms if ttl is None else ttl_ms(ttl))
        self._count("stores", amount=len(keys))
        return keys

    def get_or_compute(
        self,
        prompt: str,
        fn: Callable[[], Any],
        *,
        scope: Scope = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """The cached answer, or ``fn()`` stored and returned on a miss.

        Concurrent misses on the same prompt and scope call ``fn`` once
        (:mod:`semcache._cache.single_flight`): the others wait and take its
        result.  If ``fn`` raises, nothing is cached, and each caller that was
        waiting runs ``fn`` itself, so it gets its own answer or its own exception.
        """
        hit = self.lookup(prompt, scope=scope)
        if hit is not None:
            return hit.response
        return self._misses.run(self.address(prompt, scope), fn,
                                lambda response: self.store(prompt, response, scope=scope, ttl=ttl, metadata=metadata))

    # ------------------------------------------------------------ removal
    def delete(self, prompt: str, *, scope: Scope = None) -> bool:
        """Drop the entry stored for exactly ``prompt`` in ``scope``."""
        return self.backend.delete(self.key_for(prompt, scope))

    def clear(self, scope: Scope | _AllScopes = ALL_SCOPES) -> int:
        """Drop this cache's entries: all of them, or only ``scope``'s when given.

        ``clear()`` leaves other namespaces sharing the backend untouched, and the
        namespace's wrong-hit reports; ``clear(scope=None)`` drops the default scope only.
        """
        # Backend scopes are "<namespace>/<32 hex digits>": the scope id itself is an
        # exact prefix of one scope, the namespace plus "/" of all of them.
        prefix = f"{self.namespace}/" if isinstance(scope, _AllScopes) else self.scope_id(scope)
        return self.backend.clear_scope(prefix)

    # ------------------------------------------------------------ feedback
    def report_wrong_hit(self, hit: CacheHit | str) -> bool:
        """Report that a hit served a wrong answer: its entry is deleted and the pair recorded.

        The labelled pair (the prompt looked up, the cached prompt, the scope,
        the similarity and the verifier's score) goes to the namespace's
        feedback log in the store (:mod:`semcache._cache.feedback`), which
        ``semcache calibrate --feedback`` refits the namespace's operating point from.

        Args:
            hit: the :class:`CacheHit` (everything is recorded), or its ``key``
                (the entry is deleted and counted; no pair can be recorded).

        Returns:
            Whether the entry was still stored.

        Raises:
            InvalidInputError: not a hit of this cache's namespace.
        """
        key = feedback.record_wrong_hit(self.backend, self.namespace, hit)
        self._count("wrong_hits_reported")
        return self.backend.delete(key)

    def reports(self) -> list[feedback.Report]:
        """The wrong-hit reports recorded for this namespace, oldest first."""
        return feedback.read_reports(self.backend, self.namespace)

    # ----------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the backend (and with it the store)."""
        self.backend.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _backend(backend: object, embedding: Any) -> Backend:
    """The cache's backend: the given one (checked against ``embedding``), or an in-memory store."""
    if backend is None:
        from semcache._engine.kv import SemanticKV

        return SemanticKV(embedding=embedding)
    if isinstance(backend, str) or hasattr(backend, "__fspath__"):
        raise ConfigurationError(
            f"SemanticCache({str(backend)!r}): a path is not a backend; to keep the cache on disk, pass "
            f"SemanticCache(SemanticKV({str(backend)!r}))"
        )
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"backend must be a SemanticKV, a DistributedSemanticKV or None, got "
                                 f"{type(backend).__name__}")
    if embedding is not None:
        mine = as_embedding(embedding)
        if (mine.model_id, mine.dim) != (backend.embedding.model_id, backend.embedding.dim):
            raise ConfigurationError(
                f"embedding {mine.model_id} (dim {mine.dim}) does not match the backend's "
                f"{backend.embedding.model_id} (dim {backend.embedding.dim})"
            )
    return backend
