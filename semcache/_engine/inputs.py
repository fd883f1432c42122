"""Checking what callers pass in: one function per kind of argument, each raising an error that names it.

Every store (the embedded :class:`~semcache._engine.kv.SemanticKV`, the cluster
client, a node handling a request) checks its arguments with these, before
paying for an embedding or a network call, so a bad argument fails at the call
that passed it, with the same message everywhere.

>>> whole_number(3, "top_k", minimum=1)
3
>>> whole_number(True, "top_k", minimum=1)
Traceback (most recent call last):
    ...
semcache.errors.InvalidInputError: top_k must be a positive int, got True
>>> check_key("", Limits())
Traceback (most recent call last):
    ...
semcache.errors.InvalidInputError: key must not be empty
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from semcache.embeddings import BaseEmbedding, unit_vector
from semcache.errors import ConfigurationError, InvalidInputError, LimitExceededError, SemcacheError

DEFAULT_SCOPE = ""
# The longest time to live accepted: 100 years, far from the int64 millisecond timestamps' end.
MAX_TTL_MS = 100 * 365 * 86_400_000
# The most results one search may ask for: a search's work (and the time it holds a shard's state)
# grows with top_k, so it is bounded for every caller.  A cache asks for 1.
MAX_TOP_K = 1000
# Timestamps are stored as signed 64-bit milliseconds (commands, WAL, snapshots).
MAX_TIMESTAMP_MS = 2**63 - 1


# ------------------------------------------------------------------ numbers
def whole_number(
    value: object, name: str, *, minimum: int = 0, error: type[SemcacheError] = InvalidInputError
) -> int:
    """``value`` if it is an int (a bool is not) of at least ``minimum``.

    Raises:
        error: (InvalidInputError for a call's argument, ConfigurationError for a setting) naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise error(f"{name} must be {rule}, got {value!r}")
    return value


def positive_seconds(value: object, name: str, *, error: type[SemcacheError] = ConfigurationError) -> float:
    """``value`` as a float if it is a finite number of seconds above 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise error(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def similarity(value: object, name: str = "threshold", *, lowest: float = -1.0) -> float:
    """A cosine similarity bound: a number in ``[lowest, 1]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not lowest <= value <= 1.0
    ):
        raise InvalidInputError(f"{name} must be a number in [{lowest:g}, 1], got {value!r}")
    return float(value)


# ------------------------------------------------------------ keys, values
@dataclass(frozen=True)
class Limits:
    """Size limits enforced on every write (bytes, UTF-8 for text)."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    max_scope_bytes: int = 512

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            whole_number(value, f"limit {name}", minimum=1, error=ConfigurationError)


def utf8_size(text: str, what: str) -> int:
    """The UTF-8 size of ``text``; a lone surrogate (not encodable) is an input error."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode text: {exc.reason} at index {exc.start}") from exc


def check_key(key: object, limits: Limits) -> str:
    """A key: a non-empty str of at most ``limits.max_key_bytes`` UTF-8 bytes."""
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be str, got {type(key).__name__}")
    if not key:
        raise InvalidInputError("key must not be empty")
    size = utf8_size(key, "key")
    if size > limits.max_key_bytes:
        raise LimitExceededError("key", size, limits.max_key_bytes)
    return key


def check_value_size(value: bytes, limits: Limits) -> None:
    """Refuse a value over ``limits.max_value_bytes`` (writers check before paying for an embedding)."""
    if len(value) > limits.max_value_bytes:
        raise LimitExceededError("value", len(value), limits.max_value_bytes)


def check_scope_name(scope: object, limits: Limits) -> str:
    """A scope name: a str of at most ``limits.max_scope_bytes`` UTF-8 bytes."""
    if not isinstance(scope, str):
        raise InvalidInputError(f"scope must be str, got {type(scope).__name__}")
    size = utf8_size(scope, "scope")
    if size > limits.max_scope_bytes:
        raise LimitExceededError("scope", size, limits.max_scope_bytes)
    return scope


def check_scope(scope: object, limits: Limits | None = None) -> str:
    """A backend scope argument: None means the shared default scope."""
    if scope is None:
        return DEFAULT_SCOPE
    return check_scope_name(scope, limits or Limits())


def coerce_value(value: object) -> bytes:
    """Values are bytes; str is stored as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        utf8_size(value, "value")  # a lone surrogate is an input error, not a UnicodeEncodeError
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidInputError(f"value must be bytes or str, got {type(value).__name__}")


def check_ttl_ms(ttl_ms: object) -> int:
    """A time to live in ms: an int in ``[0, MAX_TTL_MS]``; 0 means no expiry."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 0:
        raise InvalidInputError(f"ttl_ms must be an int >= 0 (0 = no expiry), got {ttl_ms!r}")
    if ttl_ms > MAX_TTL_MS:
        raise InvalidInputError(f"ttl_ms is {ttl_ms}, over the limit of {MAX_TTL_MS} (100 years)")
    return ttl_ms


# ------------------------------------------------------------ reads
def check_search_args(top_k: object, threshold: object) -> None:
    """A search's ``top_k`` (an int in ``[1, MAX_TOP_K]``) and ``threshold`` (None or a similarity in [-1, 1])."""
    if whole_number(top_k, "top_k", minimum=1) > MAX_TOP_K:
        raise InvalidInputError(f"top_k is {top_k}, over the limit of {MAX_TOP_K} results per search")
    if threshold is not None:
        similarity(threshold)


def check_scan_args(prefix: object, limit: object) -> tuple[str, int]:
    """A scan's ``prefix`` (a str) and ``limit`` (an int >= 0)."""
    if not isinstance(prefix, str):
        raise InvalidInputError(f"prefix must be str, got {type(prefix).__name__}")
    return prefix, whole_number(limit, "limit")


def check_scope_prefix(scope_prefix: object) -> str:
    """A ``clear_scope`` prefix: a non-empty str (everything is ``clear_all()``)."""
    if not isinstance(scope_prefix, str) or not scope_prefix:
        raise InvalidInputError("scope_prefix must be a non-empty str (use clear_all() for everything)")
    return scope_prefix


# ------------------------------------------------------------ vectors
def text_to_embed(value: bytes, text: str | None) -> str | None:
    """What a put embeds: ``text`` if given, else the value as UTF-8, else nothing."""
    if text is not None:
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be str, got {type(text).__name__}")
        return text
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None  # binary values are stored but not searchable


def put_vector(embedding: BaseEmbedding, value: bytes, text: str | None, vector: Any) -> bytes | None:
    """The vector a put stores: ``vector`` checked, else the embedding of :func:`text_to_embed`, else None."""
    if vector is not None:
        return unit_vector(vector, embedding.dim).tobytes()
    to_embed = text_to_embed(value, text)
    if to_embed is None:
        return None
    return embedding.embed_one(to_embed).tobytes()


def search_vector(embedding: BaseEmbedding, query: object, vector: Any) -> np.ndarray:
    """The query vector of a search: ``vector`` checked, else the embedding of the ``query`` str."""
    if vector is not None:
        return unit_vector(vector, embedding.dim)
    if isinstance(query, str):
        return embedding.embed_one(query)
    raise InvalidInputError(f"query must be str, got {type(query).__name__}")
