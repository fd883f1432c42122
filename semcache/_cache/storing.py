"""What a store writes: each entry's record (with the verifier's data) and its vector, one or many at a time.

:meth:`SemanticCache.store <semcache.SemanticCache.store>` writes one entry
(:func:`write_entry`), ``store_many`` many with the backend's ``put_many``
(:func:`write_pairs`); both refuse what cannot be stored before embedding anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from semcache._cache.decision import verifier_fits
from semcache._cache.keys import Address, check_prompt, entry_key, normalize_prompt
from semcache._cache.lookup import embed
from semcache._cache.records import record_bytes
from semcache._engine.backend import Backend
from semcache._engine.bulk import EMBED_BATCH, bulk_entries, entry_at
from semcache.embeddings import BaseEmbedding, TokenVectors, check_texts
from semcache.errors import InvalidInputError

# A pair checked for store_many: the prompt as given, the response, the prompt normalised.
Checked = tuple[str, Any, str]


def keeps_verifier_data(embedding: BaseEmbedding) -> bool:
    """Entries keep the verifier's data whenever the embedder fits it (so switching to the verifier later works)."""
    return verifier_fits(embedding)


def verifier_data(tokens: TokenVectors | None) -> bytes | None:
    """What an entry keeps for the verifier, from its prompt's word pieces (None: none to keep)."""
    if tokens is None:
        return None
    from semcache._cache.verifier.model import shipped_verifier

    return shipped_verifier().entry_data(tokens)


def checked_pairs(pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[Checked]:
    """``store_many``'s pairs, each checked (prompt, length, a response that can be stored).

    Raises:
        InvalidInputError: the first bad pair, named by its position.
    """
    checked = []
    for position, pair in enumerate(bulk_entries(pairs, "store_many")):
        with entry_at(f"store_many pair {position}"):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise InvalidInputError(f"must be a (prompt, response) pair, got {type(pair).__name__}")
            prompt, response = pair
            normalized = normalize_prompt(check_prompt(prompt))
            check_texts([normalized])
            record_bytes(prompt, response, None, None)
            checked.append((prompt, response, normalized))
    return checked


def bulk_items(embedding: BaseEmbedding, checked: list[Checked], scope: str) -> list[tuple[str, bytes, Any]]:
    """``put_many`` items: the key, the record, and the text to embed (or the vector, with the verifier's data)."""
    if not keeps_verifier_data(embedding):
        return [(entry_key(scope, normalized), record_bytes(prompt, response, None, None), normalized)
                for prompt, response, normalized in checked]
    items: list[tuple[str, bytes, Any]] = []
    for start in range(0, len(checked), EMBED_BATCH):
        chunk = checked[start : start + EMBED_BATCH]
        vectors, tokens = embedding.embed_with_tokens([normalized for _, _, normalized in chunk])
        for (prompt, response, normalized), vector, pieces in zip(chunk, vectors, tokens, strict=True):
            items.append((entry_key(scope, normalized), record_bytes(prompt, response, None, verifier_data(pieces)),
                          vector))
    return items


def write_entry(backend: Backend, address: Address, response: Any, metadata: Mapping[str, Any] | None,
                lifetime_ms: int) -> None:
    """Store ``response`` for the prompt at ``address``: its record, with the verifier's data, and its vector."""
    embedding = backend.embedding
    record_bytes(address.prompt, response, metadata, None)  # refuse what cannot be stored before embedding it
    vector, tokens = embed(embedding, address.normalized, keeps_verifier_data(embedding))
    value = record_bytes(address.prompt, response, metadata, verifier_data(tokens))
    backend.put(address.key, value, lifetime_ms, scope=address.scope_id, vector=vector)


def write_pairs(backend: Backend, pairs: Mapping[str, Any] | Iterable[tuple[str, Any]], scope: str,
                lifetime_ms: int) -> list[str]:
    """Store every ``(prompt, response)`` pair in ``scope`` with one ``put_many``; their keys, in order.

    Raises:
        InvalidInputError: a bad pair (named by its position); nothing is stored.
    """
    items = bulk_items(backend.embedding, checked_pairs(pairs), scope)
    # A record over the backend's value limit is refused there, as "put_many item <the same position>".
    backend.put_many(items, lifetime_ms, scope=scope)
    return [key for key, _, _ in items]
