"""Semantic caching for the OpenAI client: ``wrap(client)`` and ``@semantic_cache``.

>>> from openai import OpenAI
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> from semcache.testing import FakeOpenAIServer
>>> with FakeOpenAIServer() as server:
...     cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
...     client = wrap(OpenAI(base_url=server.base_url, api_key="test"), cache=cache)
...     ask = lambda q: client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
...     first = ask("What is the capital of France?")
...     stored = client.semcache.flush()  # the store runs in the background; a paraphrase finds it once landed
...     second = ask("what is the capital of France?")
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

**Modules.** :mod:`._plan` (request to plan: prompt, scope, sampling),
:mod:`._core` (:class:`OpenAICache`), :mod:`._flow` (the one flow behind sync
and async calls), :mod:`._answers` (records to openai objects and back),
:mod:`._shapes` (completions and their chunks), :mod:`._streams` (recorded and
replayed streams), :mod:`._wrap` (:func:`wrap`, :func:`semantic_cache`).
"""

from __future__ import annotations

from semcache.errors import missing_extra

try:
    import openai  # noqa: F401 - only to tell a missing extra from a broken adapter
except ImportError as exc:
    raise missing_extra("openai", "openai", "semcache.integrations.openai") from exc

from ._answers import cache_info, is_cached
from ._core import OpenAICache, OpenAICacheStats
from ._plan import UNSCOPED_PARAMS
from ._shapes import chunks_to_completion, completion_to_chunks
from ._wrap import semantic_cache, wrap

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
