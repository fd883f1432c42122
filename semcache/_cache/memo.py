"""Exact hits already decoded, reused while the backend still holds the same bytes (the adapters' fast path)."""

from __future__ import annotations

from semcache._cache.lru import LRU
from semcache._cache.records import CacheHit


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
    >>> from semcache import SemanticCache
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
