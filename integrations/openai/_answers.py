"""Answers: a fresh result as the record stored, and a cached record as the object the caller expects.

Records are ``{"type": "chat.completion", "completion": {...}}``,
``{"type": "response", "response": {...}}`` or ``{"type": "value", "value":
...}`` (a decorated function's JSON result).  A hit comes back as the real
``openai`` object (or a replayed stream of chunks, or the value) with zero
usage and a ``semcache`` marker, which :func:`cache_info` and :func:`is_cached`
read.

>>> from semcache._cache.cache import CacheHit
>>> hit = CacheHit({"type": "value", "value": "Paris"}, 1.0, "Capital of France?", "k", {}, exact=True)
>>> cache_info(hit.response) is None, is_cached(hit.response)
(True, False)
>>> payload_of("Paris")
{'type': 'value', 'value': 'Paris'}
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pydantic
import pydantic_core
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from semcache._cache.cache import CacheHit

from .._adapter import CacheFront
from ._plan import Plan
from ._shapes import completion_to_chunks
from ._streams import Replay, ReplayAsyncStream, ReplayStream

__all__ = ["answer_for", "cache_info", "is_cached", "marker_of", "payload_of", "zeroed_usage"]

log = logging.getLogger("semcache.integrations.openai")

_ZERO_CHAT_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def cache_info(obj: Any) -> dict[str, Any] | None:
    """The ``semcache`` marker of a response served from the cache, or None for a fresh one."""
    info = getattr(obj, "semcache", None)
    return info if isinstance(info, dict) else None


def is_cached(obj: Any) -> bool:
    """Whether ``obj`` (a ``ChatCompletion``, ``Response`` or chunk) was served from the cache."""
    info = cache_info(obj)
    return bool(info and info.get("hit"))


def payload_of(result: Any) -> dict[str, Any] | None:
    """The record to store for a fresh ``result``, or None when it is not cacheable."""
    if isinstance(result, ChatCompletion):
        return {"type": "chat.completion", "completion": result.model_dump(mode="json", exclude={"semcache"})}
    if isinstance(result, Response):
        return {"type": "response", "response": result.model_dump(mode="json", exclude={"semcache"})}
    if isinstance(result, str | int | float | bool | dict | list) and not hasattr(result, "model_dump"):
        return {"type": "value", "value": result}
    return None


def answer_for(plan: Plan, hit: CacheHit, front: CacheFront[Any], *, asynchronous: bool) -> Any:
    """What the caller of ``plan`` gets for ``hit``: an openai object, a stream of chunks, or a value.

    Returns None (a miss) for an entry this adapter did not write.
    """
    answer = None if plan.stream else front.answers.get(hit)
    return answer if answer is not None else _build(plan, hit, front, asynchronous=asynchronous)


def hit_of_answer(answer: Any) -> CacheHit | None:
    """The hit a cached answer (a ``ChatCompletion``, ``Response``, chunk or replayed stream) was built from."""
    info = cache_info(answer)
    if info is None or not info.get("key"):
        return None
    return CacheHit(None, float(info.get("similarity", 0.0)), str(info.get("cached_prompt", "")), str(info["key"]),
                    {}, bool(info.get("exact")), str(info.get("prompt", "")), info.get("score"))


def _build(plan: Plan, hit: CacheHit, front: CacheFront[Any], *, asynchronous: bool) -> Any:
    """The answer for ``hit`` built from its record (see :func:`answer_for`)."""
    payload = hit.response
    marker = marker_of(hit)
    kind = payload.get("type") if isinstance(payload, dict) else None
    if kind == "chat.completion":
        completion = {**payload["completion"], "usage": zeroed_usage(payload["completion"].get("usage"))}
        if plan.stream:
            chunks = completion_to_chunks(completion, include_usage=plan.include_usage)
            replay = Replay(_model(ChatCompletionChunk, {**c, "semcache": marker}) for c in chunks)
            return ReplayAsyncStream(replay) if asynchronous else ReplayStream(replay)
        return _fresh(front, hit, ChatCompletion, {**completion, "semcache": marker})
    if kind == "response":
        usage = payload["response"].get("usage")
        response = {**payload["response"], "usage": None if usage is None else zeroed_usage(usage), "semcache": marker}
        return _fresh(front, hit, Response, response)
    if kind == "value":
        return _fresh(front, hit, None, payload["value"])
    log.warning("semcache: entry %s is not an OpenAI adapter record; treating it as a miss", hit.key)
    return None


def marker_of(hit: CacheHit) -> dict[str, Any]:
    """The ``semcache`` marker a cached answer carries (what :func:`cache_info` returns); the gateway adds it too."""
    return {
        "hit": True,
        "exact": hit.exact,
        "similarity": round(float(hit.similarity), 6),
        "cached_prompt": hit.cached_prompt,
        "key": hit.key,
        "prompt": hit.prompt,
        "score": None if hit.score is None else round(float(hit.score), 6),
    }


def _fresh(front: CacheFront[Any], hit: CacheHit, cls: Any, data: Any) -> Any:
    """The answer for ``hit`` from ``data``: an instance of the openai type ``cls``, or a plain value (None).

    ``data`` shares its nested values with the hit's response.  When that
    response is shared too (a remembered hit, a pending write), the answer
    is parsed from a serialised copy, remembered for the next exact hit of
    the same stored entry; otherwise it is built directly, as it is the
    caller's alone (a semantic hit, or an exact one decoded for this call).
    """
    if not front.shared(hit):
        return data if cls is None else _model(cls, data)
    try:
        if cls is None and (data is None or isinstance(data, str | int | float | bool)):
            return front.remember(hit, data, _immutable)  # nothing to copy
        if cls is None:
            return front.remember(hit, json.dumps(data), json.loads)
        return front.remember(hit, pydantic_core.to_json(data), cls.model_validate_json)
    except (TypeError, ValueError):  # a pending value that is not JSON, or data invalid for cls
        fresh = copy.deepcopy(data)  # built as before, from a copy: the data is shared
        return fresh if cls is None else _model(cls, fresh)


def _immutable(value: Any) -> Any:
    """The "parse" of a value that needs no copy: the value itself."""
    return value


def _model(cls: Any, data: dict[str, Any]) -> Any:
    """An openai object from stored data: validated, or built like the client does when it does not validate."""
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError:
        return cls.construct(**data)  # the client itself accepts such data from the server, unvalidated


def zeroed_usage(usage: Any) -> Any:
    """A usage record of the same shape with every count 0: a hit bills no tokens."""
    if usage is None:
        return dict(_ZERO_CHAT_USAGE)
    return {k: _zero_counts(v) for k, v in usage.items()} if isinstance(usage, dict) else usage


def _zero_counts(value: Any) -> Any:
    """``value`` with every number in it 0 (nested details of a usage record)."""
    if isinstance(value, dict):
        return {k: _zero_counts(v) for k, v in value.items()}
    return 0 if isinstance(value, int | float) and not isinstance(value, bool) else value
