"""Semantic caching for the OpenAI client: ``wrap(client)`` and ``@semantic_cache``.

>>> from openai import OpenAI
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> from semcache.testing import FakeOpenAIServer
>>> with FakeOpenAIServer() as server:
...     cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
...     client = wrap(OpenAI(base_url=server.base_url, api_key="test"), cache=cache)
...     ask = lambda q: client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
...     first, second = ask("What is the capital of France?"), ask("what is the capital of France?")
...     (is_cached(first), is_cached(second), second.usage.total_tokens, server.count())
(False, True, 0, 1)

**What must match.** A request is split into a prompt, matched semantically
(the text of the last user message), and a scope, matched exactly: the model,
every request parameter except those that only shape the transport
(:data:`UNSCOPED_PARAMS`), the system prompt and every other turn of the
conversation (:mod:`semcache.integrations._conversation`), the endpoint, and
the ``scope=`` you give.  Requests whose scope cannot be expressed as JSON, or
without a user message, go upstream uncached.

**Sampling policy.** ``sampling="deterministic"`` (the default) caches only
requests with ``temperature`` unset or 0; ``"all"`` caches sampled requests
too (the temperature still partitions the scope); a callable
``(request: dict) -> bool`` decides per request.

**Hits** are real ``openai`` objects (``ChatCompletion``, ``Response``,
``ChatCompletionChunk``) with zero usage and an extra ``semcache`` field:
``{"hit": True, "exact": ..., "similarity": ..., "cached_prompt": ...}``.
:func:`is_cached` and :func:`cache_info` read it; misses have no such field.

**Streaming.** A hit with ``stream=True`` replays as ``ChatCompletionChunk``
objects in a real stream's order: a role chunk, content or tool-call deltas,
a finish chunk, and a usage chunk when ``stream_options.include_usage`` is
set.  A streamed miss is passed through chunk by chunk and stored once the
stream ends normally with a finish reason; nothing is stored if it breaks or
the caller stops reading early.  ``/v1/responses`` streams are not cached.

**Writes are write-behind.** After a miss the answer is returned at once and
stored by a background thread; until that store lands, lookups in this
process find it in a pending-writes map (read-your-writes), so asking twice in
a row costs one upstream call.  A failed store is logged and counted in
``stats.write_failures``; ``flush()`` waits for pending writes.

**Failures of the cache** never fail the model call: a lookup that raises a
semcache error (a shard unavailable, a prompt too long to embed) is logged at
WARNING, counted in ``stats.lookup_errors`` and treated as a miss.

**Single flight.** Identical requests (same exact key) missing at the same
time make one upstream call: the first leads, the others wait for it and take
its answer (``stats.single_flight_waits``); if it fails, each makes its own
call.  Streamed requests neither lead nor wait.

**Repeated requests** take a fast path (:mod:`semcache.integrations._memo`):
the plan of a request seen recently (its prompt, scope and cache key) and the
answer built from an exact hit are remembered (``memo_size`` of each), so a
repeated exact hit costs about what a bare ``SemanticCache.lookup`` does.  The
stored entry is still read on every call and the remembered answer is used
only while it is unchanged; each caller gets an object of its own.

**Controls.** ``cache_skip=True`` bypasses the cache for one call;
``cache_refresh=True`` skips the lookup and overwrites the entry with a fresh
answer; ``cache_scope=`` adds to the scope for one call (a tenant...).
Upstream errors propagate and are never cached.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import logging
import re
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import openai
import pydantic
import pydantic_core
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from semcache._cache.cache import Address, CacheHit, Scope, SemanticCache, canonical_scope
from semcache._cache.lru import LRU
from semcache.errors import ConfigurationError, InvalidInputError, SemcacheError

from ._conversation import split_conversation
from ._memo import DEFAULT_MEMO_SIZE, MAX_PLAN_CHARS, AnswerMemo, HitMemo, fingerprint
from ._writes import AdapterCounters, WriteBehind

__all__ = [
    "UNSCOPED_PARAMS",
    "OpenAICache",
    "OpenAICacheStats",
    "cache_info",
    "chunks_to_completion",
    "completion_to_chunks",
    "is_cached",
    "semantic_cache",
    "wrap",
]

log = logging.getLogger("semcache.integrations.openai")

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
_CONTROLS = ("cache_skip", "cache_refresh", "cache_scope")
# The request fields that carry the prompt and conversation, per endpoint (not scope parameters).
_PROMPT_FIELDS = {"chat.completions": ("messages",), "responses": ("input",), "function": ("messages", "prompt")}
_ZERO_CHAT_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
_PIECE = re.compile(r"\S+\s*|\s+")
_SCALARS = frozenset({str, int, float, bool, type(None)})  # exact types: a subclass may carry a model_dump
_ARGUMENT_PIECE = 16  # characters of tool-call arguments per replayed delta


# --------------------------------------------------------------------------- markers
def cache_info(obj: Any) -> dict[str, Any] | None:
    """The ``semcache`` marker of a response served from the cache, or None for a fresh one."""
    info = getattr(obj, "semcache", None)
    return info if isinstance(info, dict) else None


def is_cached(obj: Any) -> bool:
    """Whether ``obj`` (a ``ChatCompletion``, ``Response`` or chunk) was served from the cache."""
    info = cache_info(obj)
    return bool(info and info.get("hit"))


# --------------------------------------------------------------------- stream shapes
def text_pieces(text: str) -> list[str]:
    """Split a text the way it is replayed in a stream: words with their trailing space."""
    return _PIECE.findall(text) or [""]


def completion_to_chunks(completion: Mapping[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` dicts a server streams for ``completion`` (a dict).

    Per choice, in OpenAI's order: a role chunk (carrying the first tool call's
    header, id and name, when the answer is a tool call), the content in pieces
    or each call's arguments in pieces, a finish chunk; then, when
    ``include_usage``, a chunk with no choices that carries the usage.

    Examples:
        >>> done = {"id": "c1", "created": 1, "model": "m", "choices": [
        ...     {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}]}
        >>> [c["choices"][0]["delta"] for c in completion_to_chunks(done)]
        [{'role': 'assistant', 'content': ''}, {'content': 'Hi '}, {'content': 'there'}, {}]
    """
    head = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    out: list[dict[str, Any]] = []

    def emit(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        out.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    for choice in completion["choices"]:
        index, message = choice["index"], choice.get("message") or {}
        calls = message.get("tool_calls") or []
        content = message.get("content")
        opening: dict[str, Any] = {
            "role": message.get("role") or "assistant",
            "content": None if calls and not content else "",
        }
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in text_pieces(content)] if content else []
        if message.get("refusal"):
            deltas.append({"refusal": message["refusal"]})
        for position, call in enumerate(calls):
            function = call.get("function") or {}
            header = {
                "index": position,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": ""},
            }
            if position == 0 and not content:
                opening["tool_calls"] = [header]  # as OpenAI does: the role and the first call's header together
            else:
                deltas.append({"tool_calls": [header]})
            arguments = function.get("arguments") or ""
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                deltas.append({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
        for delta in [opening, *deltas]:
            emit(index, delta)
        emit(index, {}, choice.get("finish_reason") or "stop")
    if include_usage:
        out.append({**head, "choices": [], "usage": completion.get("usage")})
    return out


def chunks_to_completion(chunks: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Reassemble streamed chunk dicts into a ``chat.completion`` dict.

    Returns:
        The completion, or None when the stream is incomplete (no chunks, or a
        choice without a finish reason), which must not be cached.

    Examples:
        >>> done = {"id": "c1", "created": 1, "model": "m", "choices": [
        ...     {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}]}
        >>> chunks_to_completion(completion_to_chunks(done))["choices"][0]["message"]["content"]
        'Hi there'
        >>> chunks_to_completion(completion_to_chunks(done)[:-1]) is None
        True
    """
    if not chunks:
        return None
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(
                part["index"],
                {
                    "index": part["index"],
                    "message": {"role": "assistant", "content": None},
                    "finish_reason": None,
                    "logprobs": None,
                },
            )
            _apply_delta(choice["message"], part.get("delta") or {})
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    first = chunks[0]
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [choices[i] for i in sorted(choices)],
        "usage": usage,
    }


def _apply_delta(message: dict[str, Any], delta: Mapping[str, Any]) -> None:
    if delta.get("role"):
        message["role"] = delta["role"]
    for field in ("content", "refusal"):
        if delta.get(field) is not None:
            message[field] = (message.get(field) or "") + delta[field]
    for call_delta in delta.get("tool_calls") or []:
        calls = message.setdefault("tool_calls", [])
        while len(calls) <= call_delta["index"]:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[call_delta["index"]]
        call["id"] = call_delta.get("id") or call["id"]
        call["type"] = call_delta.get("type") or call["type"]
        function = call_delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


# ------------------------------------------------------------------------ the core
@dataclass
class OpenAICacheStats:
    """What the adapter did, since it was created."""

    hits: int = 0
    pending_hits: int = 0  # served from the write-behind map before the store landed
    misses: int = 0
    bypassed: int = 0  # not cacheable (sampling policy, cache_skip, no user message, non-JSON params)
    refreshes: int = 0
    stores: int = 0
    write_failures: int = 0
    streams_discarded: int = 0  # streamed misses not stored: broken, abandoned or incomplete
    lookup_errors: int = 0  # lookups that raised (a cluster shard down, a prompt too long to embed...)
    single_flight_waits: int = 0  # misses that waited for an identical call in flight instead of calling upstream


@dataclass(frozen=True)
class _Plan:
    """A cacheable call: where its answer lives and how to give it back."""

    endpoint: str
    prompt: str
    scope: str  # the canonical JSON text of the full scope
    stream: bool
    include_usage: bool
    refresh: bool
    address: Address | None  # None until the cache exists (made on first lookup, off the event loop)


class OpenAICache:
    """The caching core shared by :func:`wrap` and :func:`semantic_cache`.

    Args:
        cache: the :class:`~semcache.SemanticCache` underneath; default an
            embedded one with the packaged MiniLM, made on first use.
        threshold: overrides the cache's similarity threshold for these calls.
        scope: added to every call's scope (a tenant, an app version...).
        ttl: seconds an answer stays cached (default: the cache's).
        sampling: which requests are cached (see the module docs).
        write_behind: store in a background thread (default); False stores
            before returning, which is slower but needs no ``flush()``.
        memo_size: recent requests and exact hits remembered for the fast path.
    """

    def __init__(
        self,
        cache: SemanticCache | None = None,
        *,
        threshold: float | None = None,
        scope: Scope = None,
        ttl: float | None = None,
        sampling: Sampling = "deterministic",
        write_behind: bool = True,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        if cache is not None and not isinstance(cache, SemanticCache):
            raise ConfigurationError(f"cache must be a SemanticCache or None, got {type(cache).__name__}")
        if sampling not in ("deterministic", "all") and not callable(sampling):
            raise ConfigurationError(f"sampling must be 'deterministic', 'all' or a callable, got {sampling!r}")
        canonical_scope(scope)  # fail now, not on the first call
        self._cache = cache
        self.threshold = None if threshold is None else SemanticCache._check_threshold(threshold)
        self._scope = scope
        self.ttl = ttl
        self.sampling = sampling
        self.write_behind = write_behind
        self._plans: LRU[bytes, _Plan] = LRU(memo_size)
        self._hits = HitMemo(memo_size)
        self._answers = AnswerMemo(memo_size)
        self._counters = AdapterCounters(OpenAICacheStats())
        self._lock = threading.Lock()
        self._writes: WriteBehind | None = None
        self._flights: dict[str, Future[None]] = {}
        self._warned = False

    @property
    def scope(self) -> Scope:
        """Added to every call's scope; fixed at construction (remembered plans include it)."""
        return self._scope

    @property
    def cache(self) -> SemanticCache:
        """The cache underneath (the default one is made on first use, loading the model then)."""
        return self.writes.cache

    @property
    def writes(self) -> WriteBehind:
        """The write-behind queue in front of :attr:`cache`."""
        if self._writes is None:
            with self._lock:
                if self._writes is None:
                    cache = self._cache if self._cache is not None else SemanticCache()
                    self._writes = WriteBehind(cache, enabled=self.write_behind, ttl=self.ttl)
        return self._writes

    @property
    def stats(self) -> OpenAICacheStats:
        """A snapshot of the counters."""
        return self._counters.snapshot(self._writes)

    def _count(self, name: str) -> None:
        self._counters.count(name)

    # ------------------------------------------------------------- planning
    def plan(self, endpoint: str, request: Mapping[str, Any], controls: Mapping[str, Any]) -> _Plan | None:
        """Where the answer to ``request`` is cached, or None when it must go upstream uncached."""
        streamed_response = endpoint == "responses" and request.get("stream") and not _omitted(request.get("stream"))
        if controls.get("cache_skip") or streamed_response or not self._sampling_allows(request):
            self._count("bypassed")
            return None
        # The same request again (values and types equal) has the same plan; the sampling
        # policy above is still asked every time, since a callable one may change its mind.
        memo_key = fingerprint((endpoint, request, controls))
        remembered = None if memo_key is None else self._plans.get(memo_key)
        if remembered is not None:
            return remembered
        split = _prompt_and_context(request)
        if split is None:
            self._count("bypassed")
            return None
        prompt, context = split
        params = {k: _jsonable(v) for k, v in request.items() if k not in UNSCOPED_PARAMS and not _omitted(v)}
        for name in _PROMPT_FIELDS[endpoint]:
            params.pop(name, None)
        scope = {
            "adapter": "openai",
            "endpoint": endpoint,
            "params": params,
            "context": context,
            "scope": self.scope,
            "call_scope": controls.get("cache_scope"),
        }
        try:
            # Canonicalised once here; the cache takes the text as a str scope, cheap to hash again.
            scope_text = canonical_scope(scope)
        except InvalidInputError as exc:
            if not self._warned:  # once: a decorated function taking a client object would never cache
                self._warned = True
                log.warning("semcache: %s request not cacheable (%s); such calls go upstream uncached", endpoint, exc)
            self._count("bypassed")
            return None
        stream_options = request.get("stream_options") or {}
        # Only an existing cache gives the address now: making the default one loads the model,
        # which must not happen here, on the event loop of an async caller.
        exists = self._cache is not None or self._writes is not None
        plan = _Plan(
            endpoint=endpoint,
            prompt=prompt,
            scope=scope_text,
            stream=bool(request.get("stream")) and not _omitted(request.get("stream")),
            include_usage=bool(isinstance(stream_options, Mapping) and stream_options.get("include_usage")),
            refresh=bool(controls.get("cache_refresh")),
            address=self.cache.address(prompt, scope_text) if exists else None,
        )
        if memo_key is not None and plan.address is not None and len(prompt) + len(scope_text) <= MAX_PLAN_CHARS:
            self._plans.put(memo_key, plan)
        return plan

    def _sampling_allows(self, request: Mapping[str, Any]) -> bool:
        if callable(self.sampling):
            return bool(self.sampling(request))
        if self.sampling == "all":
            return True
        temperature = request.get("temperature")
        return temperature is None or _omitted(temperature) or temperature == 0

    # -------------------------------------------------------------- lookups
    def address(self, plan: _Plan) -> Address:
        """Where ``plan``'s answer lives in the cache."""
        return plan.address or self.cache.address(plan.prompt, plan.scope)

    def find(self, plan: _Plan) -> CacheHit | None:
        """The cached answer for ``plan``: a pending write first, then the cache."""
        address = self.address(plan)
        pending = self.writes.pending(plan.prompt, scope=plan.scope, key=address.key)
        if pending is not None:
            self._count("pending_hits")
            return pending
        try:
            return self.cache.lookup_at(address, threshold=self.threshold, memo=self._hits)
        except SemcacheError as exc:  # the cache failing must not fail the model call: go upstream
            self._count("lookup_errors")
            log.warning("semcache: lookup failed (%s: %s); calling upstream uncached", type(exc).__name__, exc)
            return None

    def replay(self, plan: _Plan, hit: CacheHit, *, asynchronous: bool) -> Any:
        """Turn a hit into what the caller expects: an openai object, a stream of chunks, or a value.

        Returns None (a miss) for an entry this adapter did not write.
        """
        answer = None if plan.stream else self._answers.get(hit)
        if answer is None:
            answer = self._build_answer(plan, hit, asynchronous=asynchronous)
        if answer is not None:
            self._count("hits")
        return answer

    def _build_answer(self, plan: _Plan, hit: CacheHit, *, asynchronous: bool) -> Any:
        payload = hit.response
        marker = {
            "hit": True,
            "exact": hit.exact,
            "similarity": round(float(hit.similarity), 6),
            "cached_prompt": hit.cached_prompt,
            "key": hit.key,
        }
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "chat.completion":
            completion = {**payload["completion"], "usage": _zeroed(payload["completion"].get("usage"))}
            if plan.stream:
                chunks = [
                    _build(ChatCompletionChunk, {**c, "semcache": marker})
                    for c in completion_to_chunks(completion, include_usage=plan.include_usage)
                ]
                return _ReplayAsyncStream(chunks) if asynchronous else _ReplayStream(chunks)
            return self._fresh(hit, ChatCompletion, {**completion, "semcache": marker})
        if kind == "response":
            usage = payload["response"].get("usage")
            response = {**payload["response"], "usage": None if usage is None else _zeroed(usage), "semcache": marker}
            return self._fresh(hit, Response, response)
        if kind == "value":
            return self._fresh(hit, None, payload["value"])
        log.warning("semcache: entry %s is not an OpenAI adapter record; treating it as a miss", hit.key)
        return None

    def _fresh(self, hit: CacheHit, cls: Any, data: Any) -> Any:
        """The answer for ``hit`` from ``data``: an instance of the openai type ``cls``, or a plain value (None).

        ``data`` shares its nested values with the hit's response.  When that
        response is shared too (a remembered hit, a pending write), the answer
        is parsed from a serialised copy, remembered for the next exact hit of
        the same stored entry; otherwise it is built directly, as it is the
        caller's alone (a semantic hit, or an exact one decoded for this call).
        """
        remembered = self._hits.remembers(hit)
        if not remembered and not self.writes.holds(hit):
            return data if cls is None else _build(cls, data)
        serialised: Any
        parse: Callable[[Any], Any]
        try:
            if cls is None and (data is None or isinstance(data, str | int | float | bool)):
                serialised, parse = data, _immutable  # nothing to copy
            elif cls is None:
                serialised, parse = json.dumps(data), json.loads
            else:
                serialised, parse = pydantic_core.to_json(data), cls.model_validate_json
            answer = parse(serialised)
        except (TypeError, ValueError):  # a pending value that is not JSON, or data invalid for cls
            fresh = copy.deepcopy(data)  # built as before, from a copy: the data is shared
            return fresh if cls is None else _build(cls, fresh)
        if remembered:
            self._answers.put(hit, serialised, parse)
        return answer

    # -------------------------------------------------------------- records
    def record(self, plan: _Plan, result: Any, *, asynchronous: bool) -> Any:
        """Give a fresh ``result`` back, storing it (write-behind) or, for a stream, arranging to."""
        self._count("refreshes" if plan.refresh else "misses")
        if plan.stream and _is_stream(result):
            on_done = functools.partial(self._stream_done, plan)
            return _RecordingAsyncStream(result, on_done) if asynchronous else _RecordingStream(result, on_done)
        payload = _payload_of(result)
        if payload is None:
            log.debug("semcache: %s result of type %s is not cacheable", plan.endpoint, type(result).__name__)
        else:
            self.submit(plan, payload)
        return result

    def _stream_done(self, plan: _Plan, chunks: list[Any] | None) -> None:
        try:
            dumped = [c.model_dump(mode="json") if hasattr(c, "model_dump") else dict(c) for c in chunks or []]
            completion = chunks_to_completion(dumped)
        except (TypeError, ValueError, KeyError) as exc:  # not chat.completion.chunk objects: not cacheable
            log.warning("semcache: a %s stream could not be reassembled (%s); not cached", plan.endpoint, exc)
            completion = None
        if completion is None:
            self._count("streams_discarded")
            return
        self.submit(plan, {"type": "chat.completion", "completion": completion})

    def submit(self, plan: _Plan, payload: dict[str, Any]) -> None:
        """Store ``payload`` for ``plan``: visible to :meth:`find` at once, persisted in the background."""
        self.writes.submit(plan.prompt, payload, scope=plan.scope, metadata={"endpoint": plan.endpoint})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for pending writes; True when none is left."""
        return self._writes is None or self._writes.flush(timeout)

    def close(self) -> None:
        """Finish pending writes and stop the writer thread (the cache itself stays open)."""
        if self._writes is not None:
            self._writes.close()

    # -------------------------------------------------------- single flight
    def answer(self, plan: _Plan, *, asynchronous: bool) -> Any:
        """The cached answer for ``plan``, ready to return, or None on a miss."""
        hit = self.find(plan)
        return None if hit is None else self.replay(plan, hit, asynchronous=asynchronous)

    def pending_answer(self, plan: _Plan, *, asynchronous: bool) -> Any:
        """The answer a just-landed identical call left in the write-behind map, or None."""
        hit = self.writes.pending(plan.prompt, scope=plan.scope, key=self.address(plan).key)
        if hit is None:
            return None
        self._count("pending_hits")
        return self.replay(plan, hit, asynchronous=asynchronous)

    def join_flight(self, plan: _Plan) -> tuple[str, Future[None], bool]:
        """Single flight for identical concurrent misses: ``(key, flight, whether this caller leads it)``.

        The leader calls upstream; the others wait for its flight to land and
        then take its answer from the cache (or, if it failed, call upstream
        themselves).  Streams take no part: their answer is stored only at the end.
        """
        key = self.address(plan).key
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                self._count("single_flight_waits")
                return key, flight, False
            flight = self._flights[key] = Future()
            return key, flight, True

    def land(self, key: str, flight: Future[None]) -> None:
        """End the leader's flight (answered or failed): release its followers."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.set_result(None)

    # ------------------------------------------------------------ wrapping
    def wrap_call(self, fn: Callable[..., Any], endpoint: str, request_of: Callable[..., dict[str, Any]]) -> Any:
        """``fn`` with caching; ``request_of(*args, **kwargs)`` names the request it makes."""

        def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Plan | None, dict[str, Any]]:
            controls = {name: kwargs.pop(name) for name in _CONTROLS if name in kwargs}
            return self.plan(endpoint, request_of(*args, **kwargs), controls), kwargs

        # openai's own decorators hide that create() is async: look beneath them.
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):

            @functools.wraps(fn)
            async def cached_async(*args: Any, **kwargs: Any) -> Any:
                plan, kwargs = prepare(args, kwargs)
                if plan is None:
                    return await fn(*args, **kwargs)

                async def upstream() -> Any:
                    return self.record(plan, await fn(*args, **kwargs), asynchronous=True)

                async def cached_answer() -> Any:  # the lookup may embed the prompt: off the event loop
                    lookup = functools.partial(self.answer, plan, asynchronous=True)
                    return await asyncio.get_running_loop().run_in_executor(None, lookup)

                if plan.refresh:
                    return await upstream()
                answer = await cached_answer()
                if answer is not None or plan.stream:
                    return answer if answer is not None else await upstream()
                key, flight, leader = self.join_flight(plan)
                if not leader:
                    await asyncio.wrap_future(flight)
                    answer = await cached_answer()
                    return answer if answer is not None else await upstream()
                try:
                    answer = self.pending_answer(plan, asynchronous=True)  # a flight that landed meanwhile
                    return answer if answer is not None else await upstream()
                finally:
                    self.land(key, flight)

            cached_async.semcache = self  # type: ignore[attr-defined]
            return cached_async

        @functools.wraps(fn)
        def cached(*args: Any, **kwargs: Any) -> Any:
            plan, kwargs = prepare(args, kwargs)
            if plan is None:
                return fn(*args, **kwargs)

            def upstream() -> Any:
                return self.record(plan, fn(*args, **kwargs), asynchronous=False)

            if plan.refresh:
                return upstream()
            answer = self.answer(plan, asynchronous=False)
            if answer is not None or plan.stream:
                return answer if answer is not None else upstream()
            key, flight, leader = self.join_flight(plan)
            if not leader:
                flight.result()
                answer = self.answer(plan, asynchronous=False)
                return answer if answer is not None else upstream()
            try:
                answer = self.pending_answer(plan, asynchronous=False)  # a flight that landed meanwhile
                return answer if answer is not None else upstream()
            finally:
                self.land(key, flight)

        cached.semcache = self  # type: ignore[attr-defined]
        return cached


def _zeroed(usage: Any) -> Any:
    """A usage record of the same shape with every count 0: a hit bills no tokens."""
    if usage is None:
        return dict(_ZERO_CHAT_USAGE)
    return {k: _zero_counts(v) for k, v in usage.items()} if isinstance(usage, dict) else usage


def _zero_counts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _zero_counts(v) for k, v in value.items()}
    return 0 if isinstance(value, int | float) and not isinstance(value, bool) else value


def _immutable(value: Any) -> Any:
    return value


def _build(cls: Any, data: dict[str, Any]) -> Any:
    """An openai object from stored data: validated, or built like the client does when it does not validate."""
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError:
        return cls.construct(**data)  # the client itself accepts such data from the server, unvalidated


# ------------------------------------------------------------------ request helpers
def _omitted(value: Any) -> bool:
    return isinstance(value, openai.NotGiven | openai.Omit)


def _jsonable(value: Any) -> Any:
    """Request values as JSON: pydantic objects dumped, pydantic classes (``response_format``) as their schema."""
    if type(value) in _SCALARS:  # most values: returned as they are, without probing for attributes
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return {"pydantic_schema": value.model_json_schema()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if not _omitted(v)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
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
    dicts = [_jsonable(m) for m in messages]
    if not all(isinstance(m, Mapping) for m in dicts):
        return None
    split = split_conversation(dicts)
    return None if split is None else (split.prompt, split.context)


def _payload_of(result: Any) -> dict[str, Any] | None:
    if isinstance(result, ChatCompletion):
        return {"type": "chat.completion", "completion": result.model_dump(mode="json", exclude={"semcache"})}
    if isinstance(result, Response):
        return {"type": "response", "response": result.model_dump(mode="json", exclude={"semcache"})}
    if isinstance(result, str | int | float | bool | dict | list) and not hasattr(result, "model_dump"):
        return {"type": "value", "value": result}
    return None


def _is_stream(result: Any) -> bool:
    """A stream of chunks: iterable, but not a str, container or model (pydantic models iterate their fields)."""
    if isinstance(result, str | bytes | Mapping | Sequence | pydantic.BaseModel):
        return False
    return hasattr(result, "__iter__") or hasattr(result, "__aiter__")


# --------------------------------------------------------------------------- streams
class _ReplayStream:
    """A cached answer replayed as a sync stream of chunks (quacks like ``openai.Stream``)."""

    def __init__(self, chunks: list[ChatCompletionChunk]) -> None:
        self._iterator = iter(chunks)

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self._iterator

    def __next__(self) -> ChatCompletionChunk:
        return next(self._iterator)

    def __enter__(self) -> _ReplayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._iterator = iter(())


class _ReplayAsyncStream:
    """A cached answer replayed as an async stream of chunks (quacks like ``openai.AsyncStream``)."""

    def __init__(self, chunks: list[ChatCompletionChunk]) -> None:
        self._chunks = list(chunks)

    def __aiter__(self) -> _ReplayAsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    async def __aenter__(self) -> _ReplayAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._chunks.clear()


class _RecordingStream:
    """Pass an upstream stream through chunk by chunk; report the chunks if it ends normally.

    ``on_done`` gets the chunks after the upstream iterator is exhausted, or
    None when the stream raised or the caller closed it early.
    """

    def __init__(self, upstream: Any, on_done: Callable[[list[Any] | None], None]) -> None:
        self._upstream = upstream
        self._on_done = on_done
        self._iterator = self._run()

    def _run(self) -> Generator[Any, None, None]:
        chunks: list[Any] = []
        complete = False
        try:
            for chunk in self._upstream:
                chunks.append(chunk)
                yield chunk
            complete = True
        finally:
            self._on_done(chunks if complete else None)

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> _RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._iterator.close()
        close = getattr(self._upstream, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:  # response, headers...: the upstream stream's
        return getattr(self._upstream, name)


class _RecordingAsyncStream:
    """The async twin of :class:`_RecordingStream`."""

    def __init__(self, upstream: Any, on_done: Callable[[list[Any] | None], None]) -> None:
        self._upstream = upstream
        self._on_done = on_done
        self._iterator = self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        chunks: list[Any] = []
        complete = False
        try:
            async for chunk in self._upstream:
                chunks.append(chunk)
                yield chunk
            complete = True
        finally:
            self._on_done(chunks if complete else None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def __anext__(self) -> Any:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> _RecordingAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._iterator.aclose()
        close = getattr(self._upstream, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)


# ----------------------------------------------------------------------- entry points
class _Proxy:
    """``target`` with some attributes replaced; everything else is the target's."""

    def __init__(self, target: Any, overrides: dict[str, Any]) -> None:
        self._target = target
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__.get("_overrides", {})
        if name in overrides:
            return overrides[name]
        return getattr(self.__dict__["_target"], name)

    def __repr__(self) -> str:
        return f"<semcache cached {self._target!r}>"


def _kwargs_request(*args: Any, **kwargs: Any) -> dict[str, Any]:
    if args:
        raise InvalidInputError("the OpenAI client's create() takes keyword arguments only")
    return kwargs


def wrap(client: Any, cache: SemanticCache | None = None, **options: Any) -> Any:
    """A client whose ``chat.completions.create`` (and ``responses.create``) is cached.

    Works with ``openai.OpenAI`` and ``openai.AsyncOpenAI`` (and Azure clients);
    every other attribute is the wrapped client's.  The adapter is
    ``wrapped.semcache`` (its ``stats``, ``flush()``).

    Args:
        client: the OpenAI client.
        cache: the :class:`~semcache.SemanticCache` to use (default: an embedded one).
        **options: ``threshold``, ``scope``, ``ttl``, ``sampling``, ``write_behind``,
            ``memo_size`` (see :class:`OpenAICache`).

    Raises:
        ConfigurationError: ``client`` has no ``chat.completions.create``.
    """
    completions = getattr(getattr(client, "chat", None), "completions", None)
    if completions is None or not callable(getattr(completions, "create", None)):
        raise ConfigurationError(f"wrap() needs an OpenAI client, got {type(client).__name__}")
    core = options.pop("core", None) or OpenAICache(cache, **options)
    chat = _Proxy(
        client.chat,
        {
            "completions": _Proxy(
                completions, {"create": core.wrap_call(completions.create, "chat.completions", _kwargs_request)}
            )
        },
    )
    overrides: dict[str, Any] = {"chat": chat, "semcache": core}
    responses = getattr(client, "responses", None)
    if responses is not None and callable(getattr(responses, "create", None)):
        overrides["responses"] = _Proxy(
            responses, {"create": core.wrap_call(responses.create, "responses", _kwargs_request)}
        )
    if callable(getattr(client, "with_options", None)):
        overrides["with_options"] = lambda **kw: wrap(client.with_options(**kw), core=core)
    return _Proxy(client, overrides)


def semantic_cache(
    fn: Callable[..., Any] | None = None,
    *,
    cache: SemanticCache | None = None,
    threshold: float | None = None,
    scope: Scope = None,
    prompt_arg: str | None = None,
    exclude_args: Collection[str] = ("self", "cls"),
    **options: Any,
) -> Any:
    """Cache a function that calls the OpenAI client, sync or async.

    The function's arguments are the request: a ``messages`` argument is split
    like a chat request (the last user message is matched semantically, the
    rest exactly); otherwise ``prompt_arg`` (default: the first str argument)
    is the prompt.  Every other argument (``model``, ``temperature``...) and
    the function's qualified name form the scope, except ``exclude_args``:
    arguments that do not change the answer, such as ``self`` or a client
    object (an argument that is not JSON-like would make the call uncacheable).  The function may return a
    ``ChatCompletion``, a stream of chunks (when called with ``stream=True``),
    a ``Response``, or any JSON value such as the answer's text.

    >>> from semcache import SemanticCache, SemanticKV
    >>> from semcache.embeddings import HashEmbedding
    >>> calls = []
    >>> @semantic_cache(cache=SemanticCache(SemanticKV(embedding=HashEmbedding())), write_behind=False)
    ... def ask(question: str, model: str = "gpt-4o-mini") -> str:
    ...     calls.append(question)
    ...     return f"answer to {question}"
    >>> ask("What is semcache?"), ask("What is  semcache?"), len(calls)
    ('answer to What is semcache?', 'answer to What is semcache?', 1)

    Args:
        cache: the :class:`~semcache.SemanticCache` (default: an embedded one).
        threshold: the similarity threshold for these calls.
        scope: added to every call's scope.
        prompt_arg: the argument holding the prompt, when there is no ``messages``.
        exclude_args: arguments left out of the scope.
        **options: ``ttl``, ``sampling``, ``write_behind``, ``memo_size`` (see :class:`OpenAICache`).
    """

    def decorate(function: Callable[..., Any]) -> Any:
        core = OpenAICache(cache, threshold=threshold, scope=scope, **options)
        signature = inspect.signature(function)
        name = f"{function.__module__}.{function.__qualname__}"

        def request_of(*args: Any, **kwargs: Any) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            request: dict[str, Any] = {}
            for param, value in bound.arguments.items():
                kind = signature.parameters[param].kind
                if param in exclude_args:
                    continue
                if kind is inspect.Parameter.VAR_KEYWORD:
                    request.update((k, v) for k, v in value.items() if k not in exclude_args)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    request[f"*{param}"] = list(value)
                else:
                    request[param] = value
            if "messages" not in request:
                key = prompt_arg or next((p for p, v in request.items() if isinstance(v, str)), None)
                if key is None or not isinstance(request.get(key), str):
                    return {"function": name}  # no prompt: not cacheable
                request["prompt"] = request.pop(key)
            request["function"] = name
            return request

        return core.wrap_call(function, "function", request_of)

    return decorate(fn) if fn is not None else decorate
