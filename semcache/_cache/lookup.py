"""The two paths of a lookup: the exact key, then the nearest entry judged by the cache's decision.

:class:`Lookups` runs them for a :class:`~semcache.SemanticCache` and counts
what they found in its :class:`~semcache.CacheStats`; the paths themselves
(:func:`exact_hit`, :func:`semantic`) hold no state of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from semcache._cache.decision import Decision, Verdict
from semcache._cache.guard import conflict
from semcache._cache.keys import Address, normalize_prompt
from semcache._cache.memo import HitMemo
from semcache._cache.records import CacheHit, hit_of, read_record
from semcache._engine.backend import Backend
from semcache.embeddings import BaseEmbedding, TokenVectors


@dataclass(frozen=True)
class Explanation:
    """What a lookup found and why it decided as it did (:meth:`SemanticCache.explain`).

    Attributes:
        hit: the answer served, or None for a miss.
        exact: found by the exact path.
        decided_by: the decision in force (``"verifier, score >= 0.772 (<= 1.0% wrong hits)"``...).
        candidate_prompt: the nearest stored prompt (None: the scope holds none).
        candidate_response: its stored answer.
        similarity: its cosine similarity to the prompt.
        score: the verifier's score of it (None when a cosine threshold decided, or an exact hit).
        reason: why it was not served (None when it was, or when there was no candidate).
        guard: the hit guard's objection to it (None: none), whatever decided.
    """

    hit: CacheHit | None
    exact: bool
    decided_by: str
    candidate_prompt: str | None = None
    candidate_response: Any = None
    similarity: float | None = None
    score: float | None = None
    reason: str | None = None
    guard: str | None = None


class Count(Protocol):
    """Adds one to a :class:`~semcache.CacheStats` counter (and, for ``guard_vetoes``, to its reason's)."""

    def __call__(self, name: str, reason: str | None = None) -> None: ...


def exact_hit(backend: Backend, address: Address, memo: HitMemo | None) -> CacheHit | None:
    """The entry stored under the prompt's own key, if it holds that very prompt (normalised)."""
    value = backend.get(address.key)
    hit = None if memo is None or value is None else memo.get(address.key, address.normalized, value)
    if hit is not None:
        return hit
    record = read_record(address.key, value)
    if record is None or normalize_prompt(record.prompt) != address.normalized:
        return None
    hit = hit_of(address.key, record, 1.0, exact=True, prompt=address.prompt)
    if memo is not None and value is not None:
        memo.put(address.key, address.normalized, value, hit)
    return hit


def embed(embedding: BaseEmbedding, normalized: str, with_tokens: bool) -> tuple[Any, TokenVectors | None]:
    """A prompt's vector, and its word-piece vectors from the same forward pass when they are wanted."""
    if with_tokens:
        return embedding.embed_one_with_tokens(normalized)
    return embedding.embed_one(normalized), None


def semantic(
    backend: Backend, embedding: BaseEmbedding, address: Address, decision: Decision
) -> tuple[Explanation, Verdict | None]:
    """The nearest entry of the prompt's scope and the decision's verdict on it (None: no entry)."""
    vector, tokens = embed(embedding, address.normalized, decision.uses_tokens)
    found = backend.search(None, decision.search_k, None, scope=address.scope_id, vector=vector)
    record = read_record(found[0].key, found[0].value) if found else None
    if record is None:
        return Explanation(None, False, decision.describe()), None
    verdict = decision.judge(address.prompt, tokens, record, [result.similarity for result in found])
    explanation = Explanation(None, False, decision.describe(), record.prompt, record.response, verdict.similarity,
                              verdict.score, verdict.reason, conflict(record.prompt, address.prompt))
    if verdict.serve:
        hit = hit_of(found[0].key, record, verdict.similarity, exact=False, prompt=address.prompt, score=verdict.score)
        explanation = replace(explanation, hit=hit)
    return explanation, verdict


class Lookups:
    """A cache's lookups down both paths, each counted: a lookup, then an exact hit, a semantic hit or a miss (and
    why the nearest entry was refused: a guard veto or a verifier refusal).

    Args:
        backend: the cache's store (and its embedder).
        count: adds one to the cache's counter of that name.
    """

    def __init__(self, backend: Backend, count: Count) -> None:
        self._backend = backend
        self._count = count

    def find(self, address: Address, decision: Decision, memo: HitMemo | None) -> CacheHit | None:
        """The hit for ``address`` (exact, else semantic by ``decision``), or None."""
        self._count("lookups")
        hit = exact_hit(self._backend, address, memo)
        if hit is not None:
            self._count("exact_hits")
            return hit
        return self._semantic(address, decision).hit

    def explain(self, address: Address, decision: Decision) -> Explanation:
        """As :meth:`find`, and why it decided as it did."""
        self._count("lookups")
        hit = exact_hit(self._backend, address, None)
        if hit is not None:
            self._count("exact_hits")
            return Explanation(hit, True, decision.describe(), hit.cached_prompt, hit.response, 1.0)
        return self._semantic(address, decision)

    def _semantic(self, address: Address, decision: Decision) -> Explanation:
        explanation, verdict = semantic(self._backend, self._backend.embedding, address, decision)
        if explanation.hit is not None:
            self._count("semantic_hits")
            return explanation
        if verdict is not None and verdict.reason and verdict.reason.startswith("guard: "):
            self._count("guard_vetoes", verdict.reason.removeprefix("guard: "))
        elif verdict is not None and verdict.score is not None:
            self._count("verifier_refusals")
        self._count("misses")
        return explanation
