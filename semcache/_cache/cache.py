"""``SemanticCache``: the LLM-cache layer over any :class:`~semcache._engine.backend.Backend`.

>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()), threshold=0.8)
>>> key = cache.store("What is the capital of France?", "Paris", scope={"model": "gpt-4o"})
>>> cache.lookup("What is the capital of  France? ", scope={"model": "gpt-4o"}).exact
True
>>> cache.lookup("What is the capital of France?", scope={"model": "gpt-3.5"}) is None
True
>>> cache.lookup("   ", scope={"model": "gpt-4o"})
Traceback (most recent call last):
    ...
semcache.errors.InvalidInputError: prompt must not be empty

How a lookup decides:

1. **Scope.** The scope (a str or any JSON-like mapping: tenant, model,
   parameters, system prompt) is canonicalised and hashed; the hash names a
   separate vector index, so another scope's entries are never even seen.
2. **Exact path.** The normalised prompt (NFKC, whitespace collapsed) hashes
   to a key; a stored entry under that key is an exact hit, found without
   computing an embedding.
3. **Semantic path.** Otherwise the prompt is embedded and the nearest entry
   in the scope, if at or above the threshold, is checked by the hit guard
   (:mod:`semcache._cache.guard`); if the guard lets it through it is a semantic
   hit, otherwise a miss (the next nearest is not tried: see
   ``SEMANTIC_CANDIDATES``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from semcache._cache.guard import conflict
from semcache._cache.lru import LRU
from semcache._engine.backend import Backend
from semcache._engine.bulk import bulk_entries, entry_at
from semcache._engine.inputs import check_ttl_ms
from semcache.embeddings import BaseEmbedding, check_texts
from semcache.errors import ConfigurationError, InvalidInputError

log = logging.getLogger("semcache")

# Chosen by `semcache calibrate` with all-MiniLM-L6-v2 on ../shared/data/gptcache_mock_data.json
# read as a cache (999 origins stored, 999 paraphrases looked up, hit guard on): the lowest
# threshold of the 0.70..0.98 sweep (step 0.01) with at most 1 % wrong hits. At 0.94: 47.3 %
# right hits, 0.9 % wrong (0.93 gives 1.4 %). Most wrong hits there are near-duplicate
# origins, so this is conservative; see docs/guides/threshold.md.
DEFAULT_THRESHOLD = 0.94
DEFAULT_NAMESPACE = "semcache"
# Only the nearest entry is a candidate: when the guard vetoes it, falling back to the next
# nearest served almost only wrong answers (measured on gptcache/QQP: 1 right to 10 wrong).
SEMANTIC_CANDIDATES = 1

Scope = str | Mapping[str, Any] | None


class _AllScopes:
    """The default of :meth:`SemanticCache.clear`: every scope of the namespace."""

    def __repr__(self) -> str:
        return "ALL_SCOPES"


ALL_SCOPES = _AllScopes()


@dataclass(frozen=True)
class CacheHit:
    """A cached answer and why it was served."""

    response: Any
    similarity: float
    cached_prompt: str
    key: str
    metadata: dict[str, Any]
    exact: bool


class Address(NamedTuple):
    """Where a prompt lives in a scope: computed once by :meth:`SemanticCache.address`.

    A named tuple, not a dataclass: every lookup builds one, and a tuple is built faster.

    Attributes:
        prompt: the prompt as given (what the hit guard compares).
        normalized: the prompt as it is compared (:func:`normalize_prompt`).
        scope_id: the backend scope (index partition) of the scope.
        key: the exact-match key of the prompt in that scope.
    """

    prompt: str
    normalized: str
    scope_id: str
    key: str


class HitMemo:
    """Exact hits already decoded, reused only while the backend still holds the same bytes.

    :meth:`SemanticCache.lookup_at` always reads the exact key from the backend;
    given a memo, it skips decoding the record when the value read is equal to
    the one a remembered hit was decoded from.  An overwrite (every record
    carries its store time, so even the same answer stored again differs), a
    delete, a clear, an expiry or another process's write changes or removes
    the value, so a stale hit is never served.

    A hit is remembered from the second time the same bytes are decoded: until
    then the memo keeps only the bytes, and the hit is its caller's alone.  A
    remembered hit is shared by the lookups that reuse it (:meth:`remembers`
    tells), so its ``response`` must be treated as read-only.  Bounded (least
    recently used out) and thread-safe.

    >>> from semcache.embeddings import HashEmbedding
    >>> from semcache._engine.kv import SemanticKV
    >>> cache, memo = SemanticCache(SemanticKV(embedding=HashEmbedding())), HitMemo()
    >>> _ = cache.store("What is 2+2?", "4")
    >>> address = cache.address("What is 2+2?")
    >>> first, second, third = (cache.lookup_at(address, memo=memo) for _ in range(3))
    >>> memo.remembers(first), second is third, memo.remembers(third)
    (False, True, True)
    >>> _ = cache.store("What is 2+2?", "four")
    >>> cache.lookup_at(address, memo=memo).response
    'four'
    """

    def __init__(self, size: int = 256) -> None:
        self._entries: LRU[str, tuple[bytes, str, CacheHit | None]] = LRU(size)

    def get(self, key: str, normalized: str, value: bytes) -> CacheHit | None:
        """The hit remembered for the prompt ``normalized`` at ``key`` if it was decoded from ``value``, else None."""
        entry = self._entries.get(key)
        if entry is None or entry[2] is None or not self._same(entry, normalized, value):
            return None
        return entry[2]

    def put(self, key: str, normalized: str, value: bytes, hit: CacheHit) -> None:
        """Note that ``hit`` was decoded from ``value`` at ``key``; remember it if these bytes were seen before."""
        seen = self._entries.get(key)
        again = seen is not None and self._same(seen, normalized, value)
        self._entries.put(key, (value, normalized, hit if again else None))

    def remembers(self, hit: CacheHit) -> bool:
        """Whether ``hit`` is a remembered (shared) hit."""
        entry = self._entries.get(hit.key)
        return entry is not None and entry[2] is hit

    @staticmethod
    def _same(entry: tuple[bytes, str, CacheHit | None], normalized: str, value: bytes) -> bool:
        return entry[1] == normalized and (entry[0] is value or entry[0] == value)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class CacheStats:
    """Counters since the cache was created."""

    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    guard_vetoes: int = 0
    stores: int = 0
    computes: int = 0
    single_flight_waits: int = 0
    vetoes_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def _record_bytes(prompt: str, response: Any, metadata: Mapping[str, Any] | None) -> bytes:
    """The stored value of a cache entry: the prompt, the response (tagged with its kind) and metadata, as JSON."""
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
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"response or metadata is not JSON-serialisable: {exc}") from exc


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


def _check_ttl(ttl: float | None) -> int:
    """Seconds (float) to whole milliseconds; None or 0 means no expiry."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl < 0:
        raise InvalidInputError(f"ttl must be a finite number of seconds >= 0 or None, got {ttl!r}")
    return check_ttl_ms(max(1, math.ceil(ttl * 1000))) if ttl else 0


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


class SemanticCache:
    """A semantic cache for LLM responses.

    Args:
        backend: where entries live; default an in-memory :class:`~semcache._engine.kv.SemanticKV`.
        embedding: the embedder (default: the backend's; with no backend, the
            packaged all-MiniLM-L6-v2).  It must match the backend's model.
        threshold: the lowest cosine similarity served as a semantic hit.
        ttl: default time to live in seconds (None: no expiry).
        namespace: prefix of this cache's keys and scopes; ``clear()`` drops only these.
        guard: veto semantic hits that the hit guard flags (see :mod:`semcache._cache.guard`).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        embedding: Any = None,
        threshold: float | None = None,
        ttl: float | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        guard: bool = True,
    ) -> None:
        if backend is None:
            from semcache._engine.kv import SemanticKV

            backend = SemanticKV(embedding=embedding)
        elif embedding is not None:
            from semcache.embeddings import as_embedding

            mine = as_embedding(embedding)
            if (mine.model_id, mine.dim) != (backend.embedding.model_id, backend.embedding.dim):
                raise ConfigurationError(
                    f"embedding {mine.model_id} (dim {mine.dim}) does not match the backend's "
                    f"{backend.embedding.model_id} (dim {backend.embedding.dim})"
                )
        if not isinstance(namespace, str) or not namespace or "/" in namespace:
            raise ConfigurationError(f"namespace must be a non-empty str without '/', got {namespace!r}")
        self.backend = backend
        self.threshold = self._check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
        self.default_ttl_ms = _check_ttl(ttl)
        self.namespace = namespace
        self.guard = guard
        self.stats = CacheStats()
        self._stats_lock = threading.Lock()
        self._inflight: dict[str, Future[Any]] = {}
        self._inflight_lock = threading.Lock()

    @property
    def embedding(self) -> BaseEmbedding:
        return self.backend.embedding

    @staticmethod
    def _check_threshold(threshold: object) -> float:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or math.isnan(threshold)
            or not 0.0 <= threshold <= 1.0
        ):
            raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
        return float(threshold)

    def _count(self, name: str, reason: str | None = None) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
            if reason:
                self.stats.vetoes_by_reason[reason] = self.stats.vetoes_by_reason.get(reason, 0) + 1

    # --------------------------------------------------------------- naming
    def scope_id(self, scope: Scope) -> str:
        """The backend scope (index partition) that ``scope`` maps to."""
        digest = hashlib.sha256(canonical_scope(scope).encode("utf-8")).hexdigest()[:32]
        return f"{self.namespace}/{digest}"

    def key_for(self, prompt: str, scope: Scope = None) -> str:
        """The backend key of ``prompt`` in ``scope`` (its exact-match address)."""
        return self.address(prompt, scope).key

    def address(self, prompt: str, scope: Scope = None) -> Address:
        """Where ``prompt`` lives in ``scope``: compute it once to look it up repeatedly with :meth:`lookup_at`.

        Raises:
            InvalidInputError: the prompt or scope is invalid.
        """
        normalized = normalize_prompt(self._check_prompt(prompt))
        scope_id = self.scope_id(scope)
        return Address(prompt, normalized, scope_id, self._key(scope_id, normalized))

    @staticmethod
    def _key(scope_id: str, normalized: str) -> str:
        return f"{scope_id}/{hashlib.sha256(normalized.encode('utf-8')).hexdigest()[:32]}"

    @staticmethod
    def _check_prompt(prompt: object) -> str:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be str, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InvalidInputError("prompt must not be empty")
        return prompt

    # ------------------------------------------------------------------ API
    def lookup(self, prompt: str, *, scope: Scope = None, threshold: float | None = None) -> CacheHit | None:
        """The cached answer for ``prompt`` in ``scope``, or None on a miss.

        Args:
            threshold: overrides the cache's threshold for this call.
        """
        # The body is shared with lookup_at(), without building an Address: a bare lookup is
        # what the adapters' hits are measured against, and it pays for no extra layer.
        normalized = normalize_prompt(self._check_prompt(prompt))
        scope_id = self.scope_id(scope)
        return self._lookup(prompt, normalized, scope_id, self._key(scope_id, normalized), threshold, None)

    def lookup_at(
        self, address: Address, *, threshold: float | None = None, memo: HitMemo | None = None
    ) -> CacheHit | None:
        """:meth:`lookup` for an :meth:`address` computed earlier.

        Args:
            threshold: overrides the cache's threshold for this call.
            memo: reuse exact hits decoded earlier while their stored bytes are
                unchanged (see :class:`HitMemo`); its hits are shared, read-only.
        """
        return self._lookup(*address, threshold, memo)

    def _lookup(
        self, prompt: str, normalized: str, scope_id: str, key: str, threshold: float | None, memo: HitMemo | None
    ) -> CacheHit | None:
        limit = self.threshold if threshold is None else self._check_threshold(threshold)
        self._count("lookups")
        value = self.backend.get(key)
        hit = None if memo is None or value is None else memo.get(key, normalized, value)
        if hit is None:
            record = self._read(key, value)
            if record is not None and normalize_prompt(record["prompt"]) == normalized:
                hit = self._hit(key, record, 1.0, exact=True)
                if memo is not None and value is not None:
                    memo.put(key, normalized, value, hit)
        if hit is not None:
            self._count("exact_hits")
            return hit
        vector = self.embedding.embed_one(normalized)
        results = self.backend.search(None, SEMANTIC_CANDIDATES, limit, scope=scope_id, vector=vector)
        for result in results:
            record = self._read(result.key, result.value)
            if record is None:
                continue
            reason = conflict(record["prompt"], prompt) if self.guard else None
            if reason:
                self._count("guard_vetoes", reason)
                continue
            self._count("semantic_hits")
            return self._hit(result.key, record, result.similarity, exact=False)
        self._count("misses")
        return None

    def store(
        self,
        prompt: str,
        response: Any,
        *,
        scope: Scope = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Cache ``response`` (str, bytes or JSON-serialisable) for ``prompt``; returns the key.

        Raises:
            InvalidInputError: the prompt, scope, TTL, response or metadata is invalid.
        """
        normalized = normalize_prompt(self._check_prompt(prompt))
        scope_id = self.scope_id(scope)
        ttl_ms = self.default_ttl_ms if ttl is None else _check_ttl(ttl)
        value = _record_bytes(prompt, response, metadata)
        key = self._key(scope_id, normalized)
        vector = self.embedding.embed_one(normalized)
        self.backend.put(key, value, ttl_ms, scope=scope_id, vector=vector)
        self._count("stores")
        return key

    def store_many(
        self,
        pairs: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        scope: Scope = None,
        ttl: float | None = None,
    ) -> list[str]:
        """Cache many ``(prompt, response)`` pairs at once, to warm a cache from logs or a dataset; returns the keys.

        ``pairs`` maps prompts to responses or holds ``(prompt, response)``
        tuples.  The prompts are embedded in batches and the entries written
        with the backend's ``put_many``: about twice as fast as a
        :meth:`store` each with all-MiniLM-L6-v2.  Each entry is then found as :meth:`store`'s would be.

        >>> from semcache import SemanticKV
        >>> from semcache.embeddings import HashEmbedding
        >>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
        >>> len(cache.store_many({"What is 2 + 2?": "4", "Capital of France?": "Paris"}, scope={"model": "m"}))
        2
        >>> cache.lookup("capital of france?", scope={"model": "m"}).response
        'Paris'

        Raises:
            InvalidInputError: a bad pair (named by its position), scope or TTL; nothing is stored.
        """
        scope_id = self.scope_id(scope)
        ttl_ms = self.default_ttl_ms if ttl is None else _check_ttl(ttl)
        items = []
        for position, pair in enumerate(bulk_entries(pairs, "store_many")):
            with entry_at(f"store_many pair {position}"):
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise InvalidInputError(f"must be a (prompt, response) pair, got {type(pair).__name__}")
                prompt, response = pair
                normalized = normalize_prompt(self._check_prompt(prompt))
                check_texts([normalized])
                items.append((self._key(scope_id, normalized), _record_bytes(prompt, response, None), normalized))
        # A record over the backend's value limit is refused there, as "put_many item <the same position>".
        self.backend.put_many(items, ttl_ms, scope=scope_id)
        with self._stats_lock:
            self.stats.stores += len(items)
        return [key for key, _, _ in items]

    def get_or_compute(
        self,
        prompt: str,
        fn: Callable[[], Any],
        *,
        scope: Scope = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """The cached answer, or ``fn()`` stored and returned on a miss.

        Concurrent misses on the same prompt and scope call ``fn`` once; the
        others wait for its result (or its exception, which is not cached).
        """
        hit = self.lookup(prompt, scope=scope)
        if hit is not None:
            return hit.response
        flight = self.key_for(prompt, scope)
        with self._inflight_lock:
            future = self._inflight.get(flight)
            leader = future is None
            if future is None:
                future = self._inflight[flight] = Future()
        if not leader:
            self._count("single_flight_waits")
            return future.result()
        try:
            # A previous leader may have stored the answer between our lookup and
            # taking the lead; re-check the exact key so fn still runs only once.
            record = self._read(flight, self.backend.get(flight))
            if record is not None and normalize_prompt(record["prompt"]) == normalize_prompt(prompt):
                response = _decode_response(record["kind"], record["response"])
                future.set_result(response)
                return response
            self._count("computes")
            response = fn()
            self.store(prompt, response, scope=scope, ttl=ttl, metadata=metadata)
            future.set_result(response)
            return response
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[flight]

    def delete(self, prompt: str, *, scope: Scope = None) -> bool:
        """Drop the entry stored for exactly ``prompt`` in ``scope``."""
        return self.backend.delete(self.key_for(prompt, scope))

    def clear(self, scope: Scope | _AllScopes = ALL_SCOPES) -> int:
        """Drop this cache's entries: all of them, or only ``scope``'s when given.

        ``clear()`` leaves other namespaces sharing the backend untouched;
        ``clear(scope=None)`` drops the default scope only.
        """
        # Backend scopes are "<namespace>/<32 hex digits>": the scope id itself is an
        # exact prefix of one scope, the namespace plus "/" of all of them.
        prefix = f"{self.namespace}/" if isinstance(scope, _AllScopes) else self.scope_id(scope)
        return self.backend.clear_scope(prefix)

    # -------------------------------------------------------------- helpers
    def _read(self, key: str, value: bytes | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            record = json.loads(value)
            if not isinstance(record, dict) or "prompt" not in record or "kind" not in record:
                raise ValueError("not a cache record")
            return record
        except ValueError:
            log.warning("semcache: entry %s is not a cache record; ignoring it", key)
            return None

    def _hit(self, key: str, record: dict[str, Any], similarity: float, *, exact: bool) -> CacheHit:
        return CacheHit(
            response=_decode_response(record["kind"], record["response"]),
            similarity=similarity,
            cached_prompt=record["prompt"],
            key=key,
            metadata=record.get("metadata") or {},
            exact=exact,
        )

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
