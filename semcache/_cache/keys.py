"""Where a prompt lives: the normalised prompt, the scope's backend partition and the entry's key.

A scope (a str or any JSON-like mapping: tenant, model, parameters, system
prompt, earlier turns) is canonicalised and hashed; the hash names a separate
vector index, so another scope's entries are never even seen.  The normalised
prompt hashes to the entry's key in that scope: the exact path.

>>> scope_id("semcache", {"model": "m", "tenant": "a"}) == scope_id("semcache", {"tenant": "a", "model": "m"})
True
>>> normalize_prompt("  What is\\n2+2? ")
'What is 2+2?'
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any, NamedTuple

from semcache._engine.inputs import check_ttl_ms
from semcache.errors import ConfigurationError, InvalidInputError

Scope = str | Mapping[str, Any] | None


class _AllScopes:
    """The default of :meth:`SemanticCache.clear`: every scope of the namespace."""

    def __repr__(self) -> str:
        return "ALL_SCOPES"


ALL_SCOPES = _AllScopes()


class Address(NamedTuple):
    """Where a prompt lives in a scope: computed once by :meth:`SemanticCache.address`.

    A named tuple, not a dataclass: every lookup builds one, and a tuple is built faster.

    Attributes:
        prompt: the prompt as given (what the verifier and the hit guard compare).
        normalized: the prompt as it is compared (:func:`normalize_prompt`).
        scope_id: the backend scope (index partition) of the scope.
        key: the exact-match key of the prompt in that scope.
    """

    prompt: str
    normalized: str
    scope_id: str
    key: str


def normalize_prompt(prompt: str) -> str:
    """The form prompts are compared in: NFKC, whitespace collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", prompt).split())


def canonical_scope(scope: Scope) -> str:
    """A canonical JSON text for ``scope``; equal scopes give equal texts.

    Raises:
        InvalidInputError: the scope is not a str, None, or a JSON-serialisable mapping.
    """
    if scope is not None and not isinstance(scope, str | Mapping):
        raise InvalidInputError(f"scope must be a str, a mapping or None, got {type(scope).__name__}")
    try:
        return json.dumps(scope, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"scope is not JSON-serialisable: {exc}") from exc


def scope_id(namespace: str, scope: Scope) -> str:
    """The backend scope (index partition) ``scope`` maps to in ``namespace``: ``<namespace>/<32 hex digits>``."""
    return f"{namespace}/{hashlib.sha256(canonical_scope(scope).encode('utf-8')).hexdigest()[:32]}"


def entry_key(scope: str, normalized: str) -> str:
    """The backend key of a normalised prompt in a backend scope."""
    return f"{scope}/{hashlib.sha256(normalized.encode('utf-8')).hexdigest()[:32]}"


def check_namespace(namespace: object) -> str:
    """A cache's namespace: a non-empty str without ``/`` (it ends scope ids) or ``~`` (it names the
    namespace's own feedback and settings scopes)."""
    if not isinstance(namespace, str) or not namespace or "/" in namespace or "~" in namespace:
        raise ConfigurationError(f"namespace must be a non-empty str without '/' or '~', got {namespace!r}")
    return namespace


def check_prompt(prompt: object) -> str:
    """A prompt: a str with something in it besides whitespace."""
    if not isinstance(prompt, str):
        raise InvalidInputError(f"prompt must be str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidInputError("prompt must not be empty")
    return prompt


def ttl_ms(ttl: float | None) -> int:
    """A TTL in seconds (a float) as whole milliseconds; None or 0 means no expiry."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl < 0:
        raise InvalidInputError(f"ttl must be a finite number of seconds >= 0 or None, got {ttl!r}")
    return check_ttl_ms(max(1, math.ceil(ttl * 1000))) if ttl else 0
