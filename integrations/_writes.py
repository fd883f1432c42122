"""Write-behind stores with read-your-writes, shared by the adapters.

After a miss the caller gets its answer at once; the store (which embeds the
prompt and writes to the backend, possibly over the network) runs on one
background thread.  Until it lands, the entry sits in a pending map under its
exact cache key, so a lookup in this process already finds it.  A failed store
is logged and counted, and its pending entry is dropped (never served stale).

>>> from semcache import SemanticCache, SemanticKV
>>> from semcache.embeddings import HashEmbedding
>>> cache = SemanticCache(SemanticKV(embedding=HashEmbedding()))
>>> writes = WriteBehind(cache)
>>> key = writes.submit("What is 2+2?", "4", scope="math")
>>> # Pending until the store lands, then in the cache: found either way, never lost.
>>> (writes.pending("What is 2+2?", scope="math") or cache.lookup("What is 2+2?", scope="math")).response
'4'
>>> writes.flush(timeout=5), cache.lookup("What is 2+2?", scope="math").response
(True, '4')
>>> writes.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from semcache._cache.cache import CacheHit, Scope, SemanticCache

log = logging.getLogger("semcache.integrations")


@dataclass(frozen=True)
class _Pending:
    prompt: str
    response: Any


class WriteBehind:
    """Background stores into ``cache`` with a pending map for read-your-writes.

    Args:
        cache: where the answers are stored.
        enabled: False stores in the caller's thread (no pending map needed).
        ttl: seconds each stored answer lives (None: the cache's default).

    Attributes:
        stores: stores that landed.
        failures: stores that raised (logged at ERROR).
    """

    def __init__(self, cache: SemanticCache, *, enabled: bool = True, ttl: float | None = None) -> None:
        self.cache = cache
        self.enabled = enabled
        self.ttl = ttl
        self.stores = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._futures: set[Future[None]] = set()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, prompt: str, response: Any, *, scope: Scope, metadata: Mapping[str, Any] | None = None) -> str:
        """Store ``response`` for ``prompt`` in ``scope``; returns its key.  Visible to :meth:`pending` at once."""
        key = self.cache.key_for(prompt, scope)
        entry = _Pending(prompt, response)
        if not self.enabled:
            self._write(key, entry, scope, metadata)
            return key
        with self._lock:
            self._pending[key] = entry
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semcache-write")
            future = self._executor.submit(self._write, key, entry, scope, metadata)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return key

    def pending(self, prompt: str, *, scope: Scope) -> CacheHit | None:
        """A not-yet-stored answer for exactly ``prompt`` in ``scope``, as an exact hit."""
        if not self._pending:  # the common case: nothing in flight, skip hashing the key
            return None
        return self.pending_at(self.cache.key_for(prompt, scope))

    def pending_at(self, key: str) -> CacheHit | None:
        """:meth:`pending` for the cache key of a prompt and scope (``Address.key``)."""
        if not self._pending:
            return None
        with self._lock:
            entry = self._pending.get(key)
        if entry is None:
            return None
        return CacheHit(entry.response, 1.0, entry.prompt, key, {}, exact=True)

    def holds(self, hit: CacheHit) -> bool:
        """Whether ``hit`` (from :meth:`pending`) carries a pending write's response, shared with the writer."""
        if not self._pending:
            return False
        with self._lock:
            entry = self._pending.get(hit.key)
        return entry is not None and entry.response is hit.response

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _write(self, key: str, entry: _Pending, scope: Scope, metadata: Mapping[str, Any] | None) -> None:
        try:
            self.cache.store(entry.prompt, entry.response, scope=scope, ttl=self.ttl, metadata=metadata)
            with self._lock:
                self.stores += 1
        except Exception:
            with self._lock:
                self.failures += 1
            log.exception("semcache: storing the answer for %r failed; it was not cached", entry.prompt[:80])
        finally:
            with self._lock:
                if self._pending.get(key) is entry:
                    del self._pending[key]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the stores submitted so far; True when none is left."""
        with self._lock:
            futures = set(self._futures)
        _, not_done = wait(futures, timeout=timeout)
        return not not_done

    def close(self) -> None:
        """Finish pending stores and stop the writer thread."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
