"""From a request to a plan: what is matched semantically, what exactly, and how the answer goes back.

A request (``create()``'s keyword arguments, or a decorated function's
arguments) is split into the **prompt**, the text of the last user message,
embedded and matched semantically, and the **scope**, matched exactly: the
endpoint, every request parameter except those that only shape the transport
(:data:`UNSCOPED_PARAMS`), the rest of the conversation, the adapter's
``scope=`` and the call's ``cache_scope=``.

>>> prompt, scope = request_scope(
...     "chat.completions",
...     {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
...     {"cache_scope": "tenant-a"},
...     adapter_scope=None,
... )
>>> prompt, scope["params"], scope["call_scope"]
('Hi', {'model': 'm'}, 'tenant-a')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai

from semcache._cache.cache import Address, Scope
from semcache.errors import ConfigurationError

from .._conversation import split_conversation

__all__ = ["CONTROLS", "UNSCOPED_PARAMS", "Plan", "Sampling", "check_sampling", "request_scope", "sampling_allows"]

Sampling = Literal["deterministic", "all"] | Callable[[Mapping[str, Any]], bool]

# Request fields that do not change the answer: transport, bookkeeping, the shape of a stream.
UNSCOPED_PARAMS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "timeout",
        "extra_headers",
        "extra_query",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
)
"""Request fields left out of the scope: they shape the transport or the bookkeeping, never the answer."""
# The per-call controls, taken out of the request before it goes upstream.
CONTROLS = ("cache_skip", "cache_refresh", "cache_scope")
# The request fields that carry the prompt and conversation, per endpoint (not scope parameters).
_PROMPT_FIELDS = {"chat.completions": ("messages",), "responses": ("input",), "function": ("messages", "prompt")}
_SCALARS = frozenset({str, int, float, bool, type(None)})  # exact types: a subclass may carry a model_dump


@dataclass(frozen=True)
class Plan:
    """A cacheable call: where its answer lives and how to give it back."""

    endpoint: str
    prompt: str
    scope: str  # the canonical JSON text of the full scope
    stream: bool
    include_usage: bool
    refresh: bool
    address: Address | None  # None until the cache exists (made on first lookup, off the event loop)


def check_sampling(sampling: Sampling) -> None:
    """Check a sampling policy given at run time.

    Raises:
        ConfigurationError: it is not ``"deterministic"``, ``"all"`` or a callable.
    """
    if sampling not in ("deterministic", "all") and not callable(sampling):
        raise ConfigurationError(f"sampling must be 'deterministic', 'all' or a callable, got {sampling!r}")


def sampling_allows(sampling: Sampling, request: Mapping[str, Any]) -> bool:
    """Whether the policy caches ``request``: by default, only requests with ``temperature`` unset or 0."""
    if callable(sampling):
        return bool(sampling(request))
    if sampling == "all":
        return True
    temperature = request.get("temperature")
    return temperature is None or omitted(temperature) or temperature == 0


def omitted(value: Any) -> bool:
    """Whether ``value`` is the client's "not given" marker."""
    return isinstance(value, openai.NotGiven | openai.Omit)


def given(request: Mapping[str, Any], name: str) -> bool:
    """Whether ``request[name]`` is set and true (the client's "not given" markers are not)."""
    value = request.get(name)
    return bool(value) and not omitted(value)


def request_scope(
    endpoint: str, request: Mapping[str, Any], controls: Mapping[str, Any], *, adapter_scope: Scope
) -> tuple[str, dict[str, Any]] | None:
    """The prompt and the scope (not yet canonical) of ``request``, or None when it has no user text."""
    split = _prompt_and_context(request)
    if split is None:
        return None
    prompt, context = split
    params = {k: jsonable(v) for k, v in request.items() if k not in UNSCOPED_PARAMS and not omitted(v)}
    for name in _PROMPT_FIELDS[endpoint]:
        params.pop(name, None)
    scope = {
        "adapter": "openai",
        "endpoint": endpoint,
        "params": params,
        "context": context,
        "scope": adapter_scope,
        "call_scope": controls.get("cache_scope"),
    }
    return prompt, scope


def jsonable(value: Any) -> Any:
    """Request values as JSON: pydantic objects dumped, pydantic classes (``response_format``) as their schema."""
    if type(value) in _SCALARS:  # most values: returned as they are, without probing for attributes
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return {"pydantic_schema": value.model_json_schema()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if not omitted(v)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _prompt_and_context(request: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The embedded prompt and the exactly-matched rest of a chat, responses or plain request."""
    messages = request.get("messages")
    if messages is None:
        raw = request.get("input", request.get("prompt"))
        if isinstance(raw, str):
            return (raw, []) if raw.strip() else None
        messages = raw
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return None
    dicts = [jsonable(m) for m in messages]
    if not all(isinstance(m, Mapping) for m in dicts):
        return None
    split = split_conversation(dicts)
    return None if split is None else (split.prompt, split.context)
