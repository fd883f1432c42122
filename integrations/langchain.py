"""A LangChain cache (``langchain_core.caches.BaseCache``) backed by semcache.

>>> from langchain_core.outputs import Generation
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> lc_cache = LangChainSemanticCache(SemanticCache(SemanticKV(embedding=HashEmbedding())))
>>> lc_cache.update("What is the capital of France?", "model=a", [Generation(text="Paris")])
>>> lc_cache.flush()  # the store runs in the background; a paraphrase finds it once it has landed
True
>>> lc_cache.lookup("what is the capital of France", "model=a")
[Generation(text='Paris')]
>>> lc_cache.lookup("What is the capital of France?", "model=b") is None
True

Use it for every model with ``set_llm_cache(LangChainSemanticCache())``, or
for one with ``ChatOpenAI(..., cache=LangChainSemanticCache())``.

**What must match.** ``llm_string`` (LangChain's text of the model and its
parameters) is a hard partition: an answer cached for one model or parameter
set is never served to another.  For a chat model the prompt LangChain hands
over is a serialised message list; it is parsed, the last human message is
embedded (its text, not the JSON) and matched semantically, and every other
message (the system prompt, the earlier turns, tool turns) must match exactly
(see :mod:`semcache.integrations._conversation`).  A plain LLM's prompt string
is embedded whole.  Messages with images or other non-text parts are not
cached.

**Where entries live.** The adapter keeps its entries in a namespace of its own,
``<cache namespace>.langchain.<hash of scope>``, on the given cache's backend,
so ``clear()`` drops exactly this adapter's entries and nothing else on a shared
backend; ``clear(scope=...)`` drops those of the adapter built with that scope.

**Writes** go through the same write-behind queue as the OpenAI adapter
(:mod:`semcache.integrations._writes`): ``update()`` returns at once, a lookup
right after already sees the entry, failures are logged and counted in
``stats.write_failures``.  The async methods (``alookup``, ``aupdate``,
``aclear``) are LangChain's defaults, which run the sync ones in an executor so
the event loop never waits on an embedding.

**Repeated prompts** take a fast path (:mod:`semcache.integrations._memo`):
the parsed conversation, scope and cache key of a recent ``(prompt,
llm_string)`` and the generations built from an exact hit are remembered.  The
stored entry is still read on every lookup and the remembered generations are
used only while it is unchanged; each lookup returns objects of its own.

**Failures of the cache** never fail the model call: a lookup that raises a
semcache error (a shard unavailable, a prompt too long to embed) is logged at
WARNING, counted in ``stats.lookup_errors`` and answered as a miss.

Do not give this class a ``__len__``: LangChain tests a cache for truthiness,
and an empty cache with ``__len__() == 0`` would be silently skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
from dataclasses import dataclass
from typing import Any

from semcache.errors import InvalidInputError, missing_extra

try:
    from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
    from langchain_core.messages import message_to_dict, messages_from_dict
    from langchain_core.outputs import ChatGeneration, Generation
except ImportError as exc:
    raise missing_extra("langchain-core", "langchain", "semcache.integrations.langchain") from exc

from semcache._cache.cache import Address, CacheHit, Scope, SemanticCache, canonical_scope
from semcache._cache.lru import LRU

from ._adapter import CacheFront
from ._conversation import content_text, split_conversation
from ._memo import DEFAULT_MEMO_SIZE, MAX_PLAN_CHARS
from ._writes import WriteBehind

__all__ = ["LangChainCacheStats", "LangChainSemanticCache", "conversation_of"]

log = logging.getLogger("semcache.integrations.langchain")

# LangChain message types (the serialised ``kwargs.type``) to OpenAI-style roles.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}
# Message fields that differ between runs without changing the conversation: ids, usage, raw metadata.
_VOLATILE_FIELDS = frozenset({"id", "response_metadata", "usage_metadata", "additional_kwargs", "type", "content"})


@dataclass
class LangChainCacheStats:
    """What the adapter did, since it was created."""

    hits: int = 0
    pending_hits: int = 0
    misses: int = 0
    bypassed: int = 0  # prompts that cannot be cached (images, empty)
    stores: int = 0
    write_failures: int = 0
    lookup_errors: int = 0  # lookups that raised (a cluster shard down, a prompt too long to embed...)


def _message(serialised: Any) -> dict[str, Any] | None:
    """One LangChain-serialised message (``{"lc": 1, "kwargs": {...}}``) as an OpenAI-style dict."""
    if not isinstance(serialised, dict) or serialised.get("lc") != 1 or not isinstance(serialised.get("kwargs"), dict):
        return None
    fields = serialised["kwargs"]
    kind = fields.get("type") or str(serialised.get("id", ["", "message"])[-1]).removesuffix("Message").lower()
    role = fields.get("role") if kind == "chat" else _ROLES.get(kind, kind)
    message = {"role": role, "content": fields.get("content", "")}
    for name, value in fields.items():
        if name in _VOLATILE_FIELDS or value in (None, [], {}):
            continue
        if name == "tool_calls":  # call ids are random per run: match the calls by name and arguments
            value = [{"name": c.get("name"), "args": c.get("args")} for c in value if isinstance(c, dict)]
        elif name == "tool_call_id":
            continue
        message[name] = value
    return message


def conversation_of(prompt: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The text to embed and the context that must match, for a LangChain cache prompt.

    Returns:
        ``(text, context)``, or None when the prompt cannot be cached (empty, or
        a message with non-text content such as an image).

    >>> from langchain_core.load import dumps
    >>> from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    >>> text, context = conversation_of(dumps([SystemMessage("Be brief."), HumanMessage("Capital of France?")]))
    >>> text, [m["role"] for m in context]
    ('Capital of France?', ['system', '(prompt)'])
    >>> conversation_of("Tell me a joke")
    ('Tell me a joke', [])
    """
    if not prompt.strip():
        return None
    if prompt.startswith("["):
        try:
            parsed = json.loads(prompt)
        except ValueError:
            parsed = None
        messages = [_message(item) for item in parsed] if isinstance(parsed, list) and parsed else None
        if messages is not None and all(m is not None for m in messages):
            chat = [m for m in messages if m is not None]
            split = split_conversation(chat)
            if split is not None:
                return split.prompt, split.context
            texts = [content_text(m.get("content")) for m in chat]
            if any(t is None for t in texts):
                return None  # non-text content with no user text to key on
            # No human message (a system-only prompt): the conversation's text is the prompt.
            rendered = "\n".join(f"{m['role']}: {t}" for m, t in zip(chat, texts, strict=True))
            return (rendered, []) if rendered.strip() else None
    return prompt, []


def _dump_generations(generations: RETURN_VAL_TYPE) -> dict[str, Any]:
    rows = []
    for generation in generations:
        row: dict[str, Any]
        if isinstance(generation, ChatGeneration):
            row = {"kind": "chat", "message": message_to_dict(generation.message)}
        elif isinstance(generation, Generation):
            row = {"kind": "text", "text": generation.text}
        else:
            raise InvalidInputError(f"return_val must hold Generation objects, got {type(generation).__name__}")
        row["generation_info"] = generation.generation_info
        rows.append(row)
    return {"type": "langchain.generations", "generations": rows}


def _load_generations(payload: Any) -> list[Generation] | None:
    if not isinstance(payload, dict) or payload.get("type") != "langchain.generations":
        return None
    out: list[Generation] = []
    for row in payload["generations"]:
        if row["kind"] == "chat":
            (message,) = messages_from_dict([row["message"]])
            out.append(ChatGeneration(message=message, generation_info=row["generation_info"]))
        else:
            out.append(Generation(text=row["text"], generation_info=row["generation_info"]))
    return out


class LangChainSemanticCache(BaseCache):
    """A semantic LangChain cache over a :class:`~semcache.SemanticCache`.

    Args:
        cache: the cache whose backend, embedder, threshold, TTL and guard are
            used (default: an embedded one with the packaged MiniLM, made on first use).
        threshold: overrides the cache's similarity threshold.
        scope: this adapter's partition (a tenant, an app...): adapters with
            different scopes never share entries; ``clear()`` drops only this one's.
        ttl: seconds an answer stays cached (default: the cache's).
        write_behind: store in a background thread (default) or in ``update()``.
        memo_size: recent prompts and exact hits remembered for the fast path.
    """

    def __init__(
        self,
        cache: SemanticCache | None = None,
        *,
        threshold: float | None = None,
        scope: Scope = None,
        ttl: float | None = None,
        write_behind: bool = True,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        self.scope = scope
        self._namespace_suffix = self._suffix(scope)
        self._front = CacheFront(
            cache,
            LangChainCacheStats(),
            log=log,
            threshold=threshold,
            ttl=ttl,
            write_behind=write_behind,
            memo_size=memo_size,
            place=functools.partial(self._view, suffix=self._namespace_suffix),
        )
        self._plans: LRU[tuple[str, str], tuple[str, str, Address]] = LRU(memo_size)

    @staticmethod
    def _suffix(scope: Scope) -> str:
        return "langchain." + hashlib.sha256(canonical_scope(scope).encode("utf-8")).hexdigest()[:16]

    @staticmethod
    def _view(base: SemanticCache, suffix: str) -> SemanticCache:
        """A cache over ``base``'s backend and settings, in the namespace ``<base>.<suffix>``."""
        return base.view(f"{base.namespace}.{suffix}")

    @property
    def threshold(self) -> float | None:
        """Overrides the cache's similarity threshold (None: the cache's own)."""
        return self._front.threshold

    @property
    def ttl(self) -> float | None:
        """Seconds an answer stays cached (None: the cache's default)."""
        return self._front.ttl

    @property
    def write_behind(self) -> bool:
        """Whether ``update()`` stores in the background (else before it returns)."""
        return self._front.write_behind

    @property
    def writes(self) -> WriteBehind:
        """The write-behind queue in front of this adapter's cache namespace."""
        return self._front.writes

    @property
    def cache(self) -> SemanticCache:
        """The :class:`~semcache.SemanticCache` holding this adapter's entries (its own namespace)."""
        return self._front.cache

    @property
    def stats(self) -> LangChainCacheStats:
        """A snapshot of the counters."""
        return self._front.stats

    def _plan(self, prompt: str, llm_string: str) -> tuple[str, str, Address] | None:
        """The text to embed, the scope (canonical JSON text) and the cache address of a LangChain prompt.

        Returns None (and counts a bypass) for a prompt that cannot be cached.
        """
        if not isinstance(prompt, str) or not isinstance(llm_string, str):
            raise InvalidInputError("prompt and llm_string must be str")
        remembered = self._plans.get((prompt, llm_string))
        if remembered is not None:
            return remembered
        split = conversation_of(prompt)
        if split is None:
            self._front.count("bypassed")
            return None
        text, context = split
        try:
            scope = canonical_scope({"adapter": "langchain", "llm_string": llm_string, "context": context})
        except InvalidInputError:
            self._front.count("bypassed")
            return None
        plan = text, scope, self.cache.address(text, scope)
        if len(prompt) + len(llm_string) <= MAX_PLAN_CHARS:
            self._plans.put((prompt, llm_string), plan)
        return plan

    # ------------------------------------------------------------ BaseCache
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt`` under ``llm_string``, or None on a miss."""
        plan = self._plan(prompt, llm_string)
        if plan is None:
            return None
        hit = self._front.find(plan[2])
        generations = None if hit is None else self._generations(hit)
        self._front.count("misses" if generations is None else "hits")
        return generations

    def _generations(self, hit: CacheHit) -> list[Generation] | None:
        """The generations for ``hit``, sharing nothing with what a memo or another caller holds.

        Generations built from a record share its nested dicts.  When the
        record is shared (a remembered hit, a pending write), the caller gets a
        copy unpickled from a pickle taken before anyone could touch them, and
        the pickle is remembered for the next exact hit of the same stored
        entry (unpickling rebuilds LangChain objects in half the time of
        validating them again).  A record decoded for this call alone (a
        semantic hit, an exact hit seen once) is built from directly.
        """
        front = self._front
        generations = front.answers.get(hit)
        if generations is not None:
            return generations
        generations = _load_generations(hit.response)
        if generations is None or not front.shared(hit):
            return generations
        return front.remember(hit, pickle.dumps(generations), pickle.loads)  # from JSON: nothing unpicklable

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache ``return_val`` for ``prompt`` under ``llm_string`` (write-behind).

        Generations that cannot be stored as JSON are logged and not cached;
        the model's answer still reaches the caller.

        Raises:
            InvalidInputError: ``return_val`` holds something other than ``Generation`` objects.
        """
        plan = self._plan(prompt, llm_string)
        if plan is None:
            return
        text, scope, _ = plan
        payload = _dump_generations(return_val)
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            log.warning("semcache: generations for %r are not JSON-serialisable (%s); not cached", text[:80], exc)
            return
        self.writes.submit(text, payload, scope=scope, metadata={"adapter": "langchain"})

    def report_wrong_hit(self, prompt: str, llm_string: str) -> bool:
        """Report that the answer cached for ``prompt`` under ``llm_string`` was wrong for it.

        The entry a lookup of ``prompt`` serves now is deleted, counted and its
        labelled pair recorded (:meth:`semcache.SemanticCache.report_wrong_hit`).

        Returns:
            Whether there was such an entry.
        """
        plan = self._plan(prompt, llm_string)
        if plan is None:
            return False
        self._front.flush()
        hit = self._front.find(plan[2])
        return hit is not None and self._front.report_wrong_hit(hit)

    def clear(self, **kwargs: Any) -> None:
        """Drop this adapter's entries, or with ``scope=...`` those of the adapter built with that scope.

        This adapter's pending writes land first, so none of them reappears after
        the clear (another adapter's in-flight writes are its own to flush).

        Raises:
            InvalidInputError: an argument other than ``scope``.
        """
        unknown = set(kwargs) - {"scope"}
        if unknown:
            raise InvalidInputError(f"clear() takes only scope=..., got {sorted(unknown)}")
        writes = self.writes
        writes.flush()
        if "scope" in kwargs:
            suffix = self._suffix(kwargs["scope"])
            target = writes.cache if suffix == self._namespace_suffix else self._view(self._front.base, suffix)
        else:
            target = writes.cache
        target.clear()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for pending writes; True when none is left."""
        return self._front.flush(timeout)

    def close(self) -> None:
        """Finish pending writes and stop the writer thread (the cache stays open)."""
        self._front.close()

    def __repr__(self) -> str:
        return f"LangChainSemanticCache(scope={self.scope!r}, namespace_suffix={self._namespace_suffix!r})"
