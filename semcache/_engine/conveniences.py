"""What both stores of the seed API share: string and JSON conveniences (``put_string``, ``get_json``...), the
embedder and its model id, and ``with``.

:class:`~semcache.SemanticKV` and :class:`~semcache.DistributedSemanticKV` derive
from :class:`Conveniences`, so these are written once.

A stored value that is not what the getter expects (bytes that are not UTF-8,
text that is not JSON) raises :class:`~semcache.errors.InvalidInputError`
naming the key, never a bare ``UnicodeDecodeError`` or ``JSONDecodeError``.
"""
from __future__ import annotations

import json
from typing import Any, Self

from semcache.embeddings import BaseEmbedding
from semcache.errors import InvalidInputError


class Conveniences:
    """``put_string``/``get_string``, ``put_json``/``get_json``, ``embedding``, ``model_id`` and ``with`` (which
    closes), for every store with ``put``, ``get``, ``close`` and an ``_embedding``."""

    _embedding: BaseEmbedding

    def put(self, key: str, value: bytes | str, ttl_ms: int = 0, text: str | None = None) -> bool:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def embedding(self) -> BaseEmbedding:
        return self._embedding

    @property
    def model_id(self) -> str:
        return self._embedding.model_id

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put_string(self, key: str, value: str, ttl_ms: int = 0) -> bool:
        """Store a str (UTF-8)."""
        if not isinstance(value, str):
            raise InvalidInputError(f"put_string needs a str value, got {type(value).__name__}")
        return self.put(key, value.encode("utf-8"), ttl_ms)

    def get_string(self, key: str) -> str | None:
        """The value of ``key`` as text, or None if absent.

        Raises:
            InvalidInputError: the stored value is not UTF-8 text.
        """
        value = self.get(key)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{exc.reason} at byte {exc.start}"
            raise InvalidInputError(f"the value of {key!r} is not UTF-8 text: {reason}") from exc

    def put_json(self, key: str, value: Any, ttl_ms: int = 0) -> bool:
        """Store any JSON-serialisable value; its JSON text is what gets embedded."""
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"value is not JSON-serialisable: {exc}") from exc
        return self.put(key, text.encode("utf-8"), ttl_ms)

    def get_json(self, key: str) -> Any:
        """The value of ``key`` parsed as JSON, or None if absent.

        Raises:
            InvalidInputError: the stored value is not JSON.
        """
        value = self.get(key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            raise InvalidInputError(f"the value of {key!r} is not JSON: {exc}") from exc
