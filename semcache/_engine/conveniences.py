"""String and JSON conveniences over any store with ``put``/``get`` (the seed's ``put_string``, ``get_json``...).

A stored value that is not what the getter expects (bytes that are not UTF-8,
text that is not JSON) raises :class:`~semcache.errors.InvalidInputError`
naming the key, never a bare ``UnicodeDecodeError`` or ``JSONDecodeError``.
"""

from __future__ import annotations

import json
from typing import Any

from semcache.errors import InvalidInputError


class Conveniences:
    """``put_string``/``get_string`` and ``put_json``/``get_json``, for every store with ``put`` and ``get``."""

    def put(self, key: str, value: bytes | str, ttl_ms: int = 0, text: str | None = None) -> bool:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

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
