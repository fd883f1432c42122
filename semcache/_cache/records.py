"""A cache entry's stored value: the prompt, the answer (tagged with its kind), metadata, the verifier's data.

The value is JSON, so any backend (and a person reading a store) can read it::

    {"prompt": ..., "kind": "str" | "bytes" | "json", "response": ..., "metadata": {...},
     "stored_at": <epoch seconds>, "verifier": <base64 of the prompt's compressed word pieces>}

``verifier`` is present when the entry was stored with an embedder that gives
word-piece vectors (the packaged all-MiniLM-L6-v2); the verifier needs it to
judge the entry without embedding the cached prompt again.

>>> record = read_record("k", record_bytes("What is 2+2?", b"4", None, None))
>>> record.prompt, record.response, record.verifier
('What is 2+2?', b'4', None)
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semcache.errors import InvalidInputError

log = logging.getLogger("semcache")


@dataclass(frozen=True)
class CacheHit:
    """A cached answer and why it was served.

    Attributes:
        response: the cached answer.
        similarity: cosine similarity of the cached prompt to the prompt looked up (1.0 for an exact hit).
        cached_prompt: the prompt the answer was stored for.
        key: the entry's backend key (what :meth:`SemanticCache.report_wrong_hit` deletes).
        metadata: what was stored with it.
        exact: found by the exact path (the same normalised prompt).
        prompt: the prompt that was looked up.
        score: the verifier's score of the hit (None: an exact hit, or decided by a cosine threshold).
    """

    response: Any
    similarity: float
    cached_prompt: str
    key: str
    metadata: dict[str, Any]
    exact: bool
    prompt: str = ""
    score: float | None = None


@dataclass(frozen=True)
class Record:
    """A decoded cache entry."""

    prompt: str
    response: Any
    metadata: dict[str, Any]
    verifier: bytes | None


def record_bytes(prompt: str, response: Any, metadata: Mapping[str, Any] | None, verifier: bytes | None) -> bytes:
    """The stored value of a cache entry.

    Raises:
        InvalidInputError: the response or metadata cannot be stored as JSON.
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, got {type(metadata).__name__}")
    kind, payload = _encode_response(response)
    record = {
        "prompt": prompt,
        "kind": kind,
        "response": payload,
        "metadata": dict(metadata or {}),
        "stored_at": time.time(),
    }
    if verifier is not None:
        record["verifier"] = base64.b64encode(verifier).decode("ascii")
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"response or metadata is not JSON-serialisable: {exc}") from exc


def read_record(key: str, value: bytes | None) -> Record | None:
    """The entry stored as ``value`` under ``key``, or None (absent, or not a cache record: logged)."""
    if value is None:
        return None
    try:
        data = json.loads(value)
        if not isinstance(data, dict) or "prompt" not in data or "kind" not in data:
            raise ValueError("not a cache record")
        verifier = data.get("verifier")
        return Record(
            prompt=str(data["prompt"]),
            response=_decode_response(data["kind"], data["response"]),
            metadata=data.get("metadata") or {},
            verifier=None if verifier is None else base64.b64decode(verifier, validate=True),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        log.warning("semcache: entry %s is not a cache record; ignoring it", key)
        return None


def hit_of(key: str, record: Record, similarity: float, *, exact: bool, prompt: str,
           score: float | None = None) -> CacheHit:
    """The :class:`CacheHit` that serves ``record``."""
    return CacheHit(record.response, similarity, record.prompt, key, record.metadata, exact, prompt, score)


def _encode_response(response: Any) -> tuple[str, Any]:
    if isinstance(response, str):
        return "str", response
    if isinstance(response, bytes | bytearray):
        return "bytes", base64.b64encode(bytes(response)).decode("ascii")
    return "json", response


def _decode_response(kind: str, payload: Any) -> Any:
    if kind == "bytes":
        return base64.b64decode(payload)
    return payload
