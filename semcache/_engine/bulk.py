"""Loading in bulk: ``put_many``'s items checked up front, then embedded and written a chunk at a time.

Shared by the embedded store and the cluster client: both check every item
before storing any (:func:`bulk_puts`), then embed and write ``BULK_CHUNK``
items at a time (:func:`load_in_chunks`) through a writer of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semcache._engine.inputs import Limits, check_key, check_value_size, coerce_value, text_to_embed
from semcache.embeddings import BaseEmbedding, check_texts, unit_vector
from semcache.errors import InvalidInputError, SemcacheError

# Texts per embedding call in put_many: batches cost the model about half as
# much per text as single texts (all-MiniLM-L6-v2 on 2 cores, 57-character
# questions), and 64 bounds the memory one call takes.
EMBED_BATCH = 64
# Items put_many embeds and writes at a time, so loading a million entries does
# not hold a million vectors at once.
BULK_CHUNK = 1024


@dataclass(frozen=True)
class BulkPut:
    """One item of ``put_many``, checked: its key, its value bytes, and what to embed or the vector to store.

    Attributes:
        text: what to embed (None with no vector: not searchable).
        vector: a precomputed embedding (then ``text`` is None); checked against
            the embedder's dimension by :func:`load_in_chunks` before anything is stored.
    """

    key: str
    value: bytes
    text: str | None
    vector: np.ndarray | None = None


def bulk_entries(items: object, call: str) -> list[Any]:
    """A bulk call's items as a list: a mapping's ``(key, value)`` pairs, or an iterable's elements."""
    if isinstance(items, Mapping):
        return list(items.items())
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise InvalidInputError(f"{call} needs a mapping or an iterable of tuples, got {type(items).__name__}")
    return list(items)


@contextlib.contextmanager
def entry_at(where: str) -> Iterator[None]:
    """Prefix an :class:`InvalidInputError` raised inside with where it happened (``put_many item 3: ...``).

    The error keeps its type and attributes (a LimitExceededError its ``limit``).
    """
    try:
        yield
    except InvalidInputError as exc:
        exc.args = (f"{where}: {exc}",)
        raise


def bulk_puts(items: object, limits: Limits) -> list[BulkPut]:
    """``put_many``'s items, checked: a mapping of key to value, or ``(key, value)`` / ``(key, value, text)`` tuples.

    The third element may also be a precomputed embedding (a numpy array), stored instead of embedding anything.

    >>> [p.key for p in bulk_puts({"a": "one", "b": b"two"}, Limits())]
    ['a', 'b']
    >>> bulk_puts([("a", "one"), ("", "two")], Limits())
    Traceback (most recent call last):
        ...
    semcache.errors.InvalidInputError: put_many item 1: key must not be empty

    Raises:
        InvalidInputError: the first bad item, named by its position.
    """
    checked = []
    for position, item in enumerate(bulk_entries(items, "put_many")):
        with entry_at(f"put_many item {position}"):
            if not isinstance(item, tuple | list) or len(item) not in (2, 3):
                raise InvalidInputError(f"must be (key, value) or (key, value, text), got {type(item).__name__}")
            key, value, text = item if len(item) == 3 else (*item, None)
            check_key(key, limits)
            data = coerce_value(value)
            check_value_size(data, limits)
            if isinstance(text, np.ndarray):
                checked.append(BulkPut(key, data, None, text))
                continue
            to_embed = text_to_embed(data, text)
            if to_embed is not None:
                check_texts([to_embed])  # too long to embed: refused now, not halfway through the load
            checked.append(BulkPut(key, data, to_embed))
    return checked


def embed_texts(embedding: BaseEmbedding, texts: Sequence[str | None]) -> list[bytes | None]:
    """The vector bytes of each text (None for None), embedded ``EMBED_BATCH`` texts per model call."""
    wanted = [(row, text) for row, text in enumerate(texts) if text is not None]
    vectors: list[bytes | None] = [None] * len(texts)
    for start in range(0, len(wanted), EMBED_BATCH):
        chunk = wanted[start:start + EMBED_BATCH]
        for (row, _), vector in zip(chunk, embedding.embed([text for _, text in chunk]), strict=True):
            vectors[row] = vector.tobytes()
    return vectors


# Writes one embedded chunk: how many of its items were stored (a prefix, or on
# a cluster any of them), and the error that stopped the rest, or None.
ChunkWriter = Callable[[list[BulkPut], list[bytes | None]], tuple[int, BaseException | None]]


def load_in_chunks(items: list[BulkPut], embedding: BaseEmbedding, write: ChunkWriter) -> int:
    """Embed and write checked items ``BULK_CHUNK`` at a time; return how many were stored.

    Raises:
        Exception: the first error of the embedder or of ``write``, with how many
            items were stored before it (:func:`note_progress`).
    """
    given = _given_vectors(items, embedding.dim)  # checked before anything is stored
    stored = 0
    for start in range(0, len(items), BULK_CHUNK):
        chunk = items[start:start + BULK_CHUNK]
        try:
            vectors = embed_texts(embedding, [item.text for item in chunk])
            vectors = [given.get(start + row, vector) for row, vector in enumerate(vectors)]
            count, error = write(chunk, vectors)
        except Exception as exc:  # the embedder, or a writer that raised instead of returning its error
            note_progress(exc, stored, len(items))
            raise
        stored += count
        if error is not None:
            note_progress(error, stored, len(items))
            raise error
    return stored


def _given_vectors(items: list[BulkPut], dim: int) -> dict[int, bytes]:
    """The precomputed vectors of ``items`` by position, each checked (dimension, NaN, zero) and normalised."""
    given = {}
    for position, item in enumerate(items):
        if item.vector is not None:
            with entry_at(f"put_many item {position}"):
                given[position] = unit_vector(item.vector, dim).tobytes()
    return given


def note_progress(error: BaseException, stored: int, total: int) -> None:
    """Say in ``error`` how far a ``put_many`` got before it: in its message when it is one of ours."""
    progress = f"put_many stored {stored} of {total} items"
    if isinstance(error, SemcacheError):
        error.args = (f"{progress}; {error}",)
    else:
        error.add_note(progress)
