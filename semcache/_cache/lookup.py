"""The two paths of a lookup: the exact key, then the nearest entry judged by the cache's decision.

:class:`~semcache.SemanticCache` calls these and counts what they found; they
hold no state of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

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
