"""The adapters' exact-hit fast path: memoised request plans and built answers.

An exact hit (the same request again) costs the bare cache one key read and a
JSON decode; without this, the adapters' fixed work (canonicalising the
request into a scope, then rebuilding a validated openai or LangChain object
from the stored JSON) made it two to four times as slow.  Bounded memos take
that work off repeated requests without giving up correctness (the decoded
hits' memo is :class:`~semcache._cache.cache.HitMemo`, in the core):

* **Plans.** A request's fingerprint (:func:`fingerprint`, exact over its
  values and their types; for LangChain, the ``(prompt, llm_string)`` strings
  themselves) maps to its plan: prompt, canonical scope and
  :class:`~semcache._cache.cache.Address`.  A request that cannot be fingerprinted
  exactly (an object, a ``NOT_GIVEN``) is planned from scratch every time.
* **Answers.** Per remembered exact hit (:class:`~semcache._cache.cache.HitMemo`
  remembers a hit from the second time its bytes are decoded, so a one-off
  hit costs no copy), a serialised copy of the answer built from it
  (JSON bytes for openai objects, a pickle made in this process for LangChain
  objects, which rebuild faster that way, or the value itself when it is
  immutable); each call rebuilds the answer from that copy, so no two callers
  share a mutable object.  An answer is valid only for the very hit object it
  was built from, and :class:`~semcache._cache.cache.HitMemo` hands out the same hit
  object only while the backend holds the same bytes: an overwrite, delete,
  clear, expiry or another process's write is seen on the next call.  Keys
  include the scope, so an answer never crosses scopes.

Memory: each adapter keeps at most ``memo_size`` (default
:data:`DEFAULT_MEMO_SIZE`) plans, decoded hits and answers; a plan is not kept
for a request longer than :data:`MAX_PLAN_CHARS`.

>>> import json
>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> cache, memo = SemanticCache(SemanticKV(embedding=HashEmbedding())), HitMemo()
>>> _ = cache.store("What is 2+2?", {"answer": 4})
>>> answers = AnswerMemo()
>>> hit = [cache.lookup_at(cache.address("What is 2+2?"), memo=memo) for _ in range(2)][-1]  # remembered now
>>> answers.put(hit, json.dumps(hit.response), json.loads)
>>> again = cache.lookup_at(cache.address("What is 2+2?"), memo=memo)
>>> first, second = answers.get(again), answers.get(again)
>>> first == second == {"answer": 4}, first is second
(True, False)
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Callable
from typing import Any

from semcache._cache.cache import CacheHit, HitMemo
from semcache._cache.lru import LRU

__all__ = ["DEFAULT_MEMO_SIZE", "MAX_PLAN_CHARS", "AnswerMemo", "HitMemo", "fingerprint"]

DEFAULT_MEMO_SIZE = 256  # requests (plans) and exact hits (answers) remembered per adapter
# Plans of longer requests are not remembered: the memo's memory stays bounded
# (about DEFAULT_MEMO_SIZE x this), and such requests are dominated by their own size anyway.
MAX_PLAN_CHARS = 32_768


def fingerprint(value: Any) -> bytes | None:
    """A digest that is equal for two values only if they are equal with the same types, or None.

    ``marshal`` accepts only exact built-in types (no subclasses, no objects
    whose state could change behind an equal ``repr``) and tells ``True`` from
    ``1`` and ``1`` from ``1.0``; whatever it refuses gets None (not memoised).
    Equal values may still get different digests (a dict in another key
    order): that only costs a memo miss.

    >>> fingerprint({"model": "m", "temperature": 0}) == fingerprint({"model": "m", "temperature": 0})
    True
    >>> fingerprint({"n": 1}) == fingerprint({"n": True}), fingerprint({"client": object()})
    (False, None)
    """
    try:
        return hashlib.sha256(marshal.dumps(value, 2)).digest()
    except ValueError:  # an unmarshallable object somewhere in the value
        return None


class AnswerMemo:
    """Per exact hit, the adapter's answer serialised; every :meth:`get` rebuilds a fresh copy.

    Args:
        size: hits remembered (least recently used out).
    """

    def __init__(self, size: int = DEFAULT_MEMO_SIZE) -> None:
        self._entries: LRU[str, tuple[CacheHit, Any, Callable[[Any], Any]]] = LRU(size)

    def get(self, hit: CacheHit) -> Any:
        """A fresh answer for ``hit`` if one was built from this very hit object, else None."""
        entry = self._entries.get(hit.key)
        if entry is None or entry[0] is not hit:
            return None
        return entry[2](entry[1])

    def put(self, hit: CacheHit, serialised: str | bytes, parse: Callable[[Any], Any]) -> None:
        """Remember that ``parse(serialised)`` rebuilds the answer for ``hit``."""
        self._entries.put(hit.key, (hit, serialised, parse))
