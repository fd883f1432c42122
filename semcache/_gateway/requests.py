"""From an HTTP request to what the gateway does with it: a checked body and a :class:`Plan`.

The scope rules are the Python wrapper's (:func:`semcache.integrations.openai._plan.request_scope`):
the last user message is matched semantically; the model, every
answer-shaping parameter, the system prompt and the earlier turns exactly.
The tenant and the ``x-semcache-namespace`` header pick the cache namespace
(``gw.<tenant>.<namespace>``), so no tenant is ever served another's entry.

Per-request controls (headers):

* ``Cache-Control: no-cache``: skip the lookup, store the answer;
  ``no-store``: do not store; both: bypass the cache;
* ``x-semcache-ttl``: seconds the answer stays cached;
* ``x-semcache-namespace``: a sub-scope within the tenant;
* ``x-semcache-max-wrong-rate``: the verifier's operating point (a rate or a
  preset), no looser than the tenant's;
* ``x-semcache-threshold``: a minimum cosine similarity for semantic hits, on
  top of the tenant's decision (it can only refuse hits, never add them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semcache._cache.decision import PRESETS, wrong_rate_of
from semcache._cache.keys import canonical_scope
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.integrations.openai._plan import request_scope

from .auth import Caller
from .config import NAME

__all__ = ["CACHED_PATHS", "BadRequest", "Plan", "parse_body", "plan_for"]

CACHED_PATHS = {"/v1/chat/completions": "chat.completions", "/v1/responses": "responses"}
DEFAULT_NAMESPACE = "default"
_MAX_TTL = 10 * 365 * 86400.0  # ten years: beyond that a TTL is a typo


class BadRequest(InvalidInputError):
    """A request the gateway refuses with a 4xx and an OpenAI-style error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Plan:
    """What one cacheable request does.

    Attributes:
        endpoint: ``"chat.completions"`` or ``"responses"``.
        model: the request's model.
        namespace: the cache namespace (``gw.<tenant>.<namespace>``).
        prompt: the text matched semantically.
        scope: the canonical JSON of everything matched exactly.
        stream: the client asked for a stream.
        include_usage: a stream's last chunk carries the usage.
        lookup: look the cache up (not ``no-cache``).
        store: store a fresh answer (not ``no-store``).
        ttl: seconds the answer stays cached (None: the tenant's or the cache's).
        max_wrong_rate: the verifier's operating point for this request (None: the tenant's).
        min_similarity: semantic hits below this cosine are refused (None: no extra bound).
    """

    endpoint: str
    model: str
    namespace: str
    prompt: str
    scope: str
    stream: bool
    include_usage: bool
    lookup: bool = True
    store: bool = True
    ttl: float | None = None
    max_wrong_rate: float | None = None
    min_similarity: float | None = None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body.

    Raises:
        BadRequest: not JSON, or not an object.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}"[:300]) from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def check_body(endpoint: str, body: Mapping[str, Any]) -> str:
    """The model of a cached endpoint's body, after checking the fields the gateway reads.

    Raises:
        BadRequest: the model is missing or not a string, or the messages (input) are missing or malformed.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter (a non-empty string)", param="model")
    if endpoint == "chat.completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array of message objects", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest(f"messages[{i}] must be an object with a string role", param=f"messages[{i}]")
    elif not isinstance(body.get("input"), str | list):
        raise BadRequest("input must be a string or an array of input items", param="input")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("stream must be true or false", param="stream")
    return model


def cacheable(body: Mapping[str, Any], sampling: str) -> bool:
    """Whether the tenant's sampling policy caches this request (by default: temperature unset or 0)."""
    if sampling == "all":
        return True
    temperature = body.get("temperature")
    return temperature is None or temperature == 0


def plan_for(
    endpoint: str, body: Mapping[str, Any], headers: Mapping[str, str], caller: Caller, *, default_rate: float
) -> Plan | None:
    """The plan of a cacheable request, or None when it bypasses the cache.

    Args:
        default_rate: the wrong-hit rate of a tenant that sets none (the cache's operating point).

    It bypasses on ``Cache-Control: no-cache, no-store``, a sampled request
    (see the tenant's ``sampling``), a streamed ``/v1/responses`` call, or a
    request with no user text.

    Raises:
        BadRequest: a malformed body or control header.
    """
    model = check_body(endpoint, body)
    controls = _cache_control(headers)
    stream = bool(body.get("stream"))
    namespace = _namespace(caller, headers)
    ttl = _ttl(headers)
    max_wrong_rate = _max_wrong_rate(headers, caller, default_rate)
    min_similarity = _min_similarity(headers)
    if ("no-cache" in controls and "no-store" in controls) or not cacheable(body, caller.tenant.sampling):
        return None
    if endpoint == "responses" and stream:
        return None  # streamed Responses events are passed through, not cached
    split = request_scope(endpoint, body, {}, adapter_scope=None)
    if split is None:
        return None
    prompt, scope = split
    options = body.get("stream_options")
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return Plan(endpoint, model, namespace, prompt, canonical_scope(scope), stream, include_usage,
                lookup="no-cache" not in controls, store="no-store" not in controls, ttl=ttl,
                max_wrong_rate=max_wrong_rate, min_similarity=min_similarity)


def _cache_control(headers: Mapping[str, str]) -> set[str]:
    return {part.strip().lower() for part in headers.get("cache-control", "").split(",") if part.strip()}


def _namespace(caller: Caller, headers: Mapping[str, str]) -> str:
    name = headers.get("x-semcache-namespace", DEFAULT_NAMESPACE)
    if not NAME.match(name):
        raise BadRequest(f"x-semcache-namespace must be 1-64 letters, digits, '_' or '-', got {name[:80]!r}",
                         param="x-semcache-namespace")
    return f"gw.{caller.tenant.name}.{name}"


def _ttl(headers: Mapping[str, str]) -> float | None:
    text = headers.get("x-semcache-ttl")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 < seconds <= _MAX_TTL:
        raise BadRequest(f"x-semcache-ttl must be a number of seconds in (0, {_MAX_TTL:.0f}], got {text[:40]!r}",
                         param="x-semcache-ttl")
    return seconds


def _max_wrong_rate(headers: Mapping[str, str], caller: Caller, default_rate: float) -> float | None:
    text = headers.get("x-semcache-max-wrong-rate")
    if text is None:
        return None
    if caller.tenant.threshold is not None:
        raise BadRequest("x-semcache-max-wrong-rate needs the verifier; this tenant matches by a cosine threshold "
                         "(use x-semcache-threshold)", param="x-semcache-max-wrong-rate")
    try:
        rate = wrong_rate_of(text if text in PRESETS else float(text))
    except (ValueError, ConfigurationError):
        raise BadRequest(f"x-semcache-max-wrong-rate must be one of {', '.join(PRESETS)} or a rate in (0, 1), "
                         f"got {text[:40]!r}", param="x-semcache-max-wrong-rate") from None
    tenant_rate = caller.tenant.max_wrong_rate
    ceiling = default_rate if tenant_rate is None else wrong_rate_of(tenant_rate)
    if rate > ceiling:
        raise BadRequest(f"x-semcache-max-wrong-rate {text!r} is looser than the tenant's {ceiling:g}: "
                         "a request may only make matching stricter", param="x-semcache-max-wrong-rate")
    return rate


def _min_similarity(headers: Mapping[str, str]) -> float | None:
    text = headers.get("x-semcache-threshold")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise BadRequest(f"x-semcache-threshold must be a cosine similarity in [0, 1], got {text[:40]!r}",
                         param="x-semcache-threshold")
    return value
