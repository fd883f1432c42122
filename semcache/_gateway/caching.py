"""The gateway's side of the cache: per-tenant views, lookups and stores off the event loop, hit bodies.

A tenant's entries live in its own namespaces (``gw.<tenant>.<namespace>``) of
one :class:`~semcache.SemanticCache`, so invalidating a tenant is one prefix
clear and no lookup can cross tenants.  Records are the Python wrapper's
(``{"type": "chat.completion", "completion": ...}``), so a hit comes back in
the shape the wrapper replays: usage zeroed, a ``semcache`` marker that
:func:`semcache.integrations.openai.cache_info` reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import anyio

from semcache._cache.cache import CacheHit, SemanticCache
from semcache._cache.decision import ThresholdDecision, choose_decision
from semcache._cache.lookup import exact_hit
from semcache.embeddings import as_embedding
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.integrations.openai._answers import marker_of, zeroed_usage
from semcache.integrations.openai._shapes import completion_to_chunks

from .config import CacheSettings, Tenant
from .requests import Plan

__all__ = ["GatewayCache", "build_cache", "hit_chunks", "hit_json", "record_of", "tenant_of_key"]

log = logging.getLogger("semcache.gateway")


def build_cache(settings: CacheSettings) -> SemanticCache:
    """The cache a config names: in memory, in a directory, or in a cluster (from its cluster file)."""
    if settings.cluster:
        from semcache.cluster import ClusterConfig, DistributedSemanticKV

        cluster = ClusterConfig.load(settings.cluster)
        nodes = [replica.rpc for replica in cluster.replicas()]
        backend: Any = DistributedSemanticKV(nodes, token=cluster.token or None, embedding=settings.embedding)
    else:
        from semcache._engine.kv import SemanticKV

        backend = SemanticKV(settings.path, embedding=as_embedding(settings.embedding))
    return SemanticCache(backend, ttl=settings.ttl, max_wrong_rate=settings.max_wrong_rate)


def tenant_of_key(key: str) -> str | None:
    """The tenant of a gateway entry key (``gw.<tenant>.<namespace>/...``), or None for another key."""
    namespace = key.split("/", 1)[0]
    parts = namespace.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "gw" and "/" in key else None


def record_of(endpoint: str, answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record to store for a fresh answer, or None when it is not a finished answer."""
    if endpoint == "chat.completions":
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        return {"type": "chat.completion", "completion": dict(answer)}
    if answer.get("status", "completed") != "completed":
        return None
    return {"type": "response", "response": dict(answer)}


def hit_json(hit: CacheHit) -> dict[str, Any] | None:
    """The JSON answer of a hit (usage zeroed, the ``semcache`` marker added), or None for a foreign record."""
    record = hit.response
    kind = record.get("type") if isinstance(record, dict) else None
    if kind == "chat.completion":
        completion = record["completion"]
        return {**completion, "usage": zeroed_usage(completion.get("usage")), "semcache": marker_of(hit)}
    if kind == "response":
        response = record["response"]
        usage = response.get("usage")
        return {**response, "usage": None if usage is None else zeroed_usage(usage), "semcache": marker_of(hit)}
    return None


def hit_chunks(hit: CacheHit, *, include_usage: bool) -> list[dict[str, Any]] | None:
    """A chat hit replayed as the chunks of a stream, or None when the record is not a chat completion."""
    answer = hit_json(hit)
    if answer is None or answer.get("object", "chat.completion") != "chat.completion" or "choices" not in answer:
        return None
    marker = answer["semcache"]
    return [{**chunk, "semcache": marker} for chunk in completion_to_chunks(answer, include_usage=include_usage)]


class GatewayCache:
    """The cache behind the gateway: lookups and stores run in worker threads; stores are tracked until done."""

    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self._stores: set[asyncio.Task[None]] = set()
        self._decisions: dict[tuple[float | None, float | str | None], Any] = {}

    # ----------------------------------------------------------- views
    def _view(self, plan: Plan, tenant: Tenant) -> SemanticCache:
        view = self.cache.view(plan.namespace)
        rate = plan.max_wrong_rate if plan.max_wrong_rate is not None else tenant.max_wrong_rate
        if tenant.threshold is not None or rate is not None:
            view.decision = self._decision(tenant.threshold, rate)
        return view

    def _decision(self, threshold: float | None, rate: float | str | None) -> Any:
        key = (threshold, rate)
        if key not in self._decisions:  # a handful of distinct settings: tenants' and the presets
            self._decisions[key] = choose_decision(self.cache.embedding, threshold=threshold, max_wrong_rate=rate,
                                                   guard=True)
        return self._decisions[key]

    def check_tenant(self, tenant: Tenant) -> None:
        """Fail at start-up, not on a request, when a tenant's operating point cannot apply to this cache.

        Raises:
            ConfigurationError: a ``max_wrong_rate`` with an embedder the verifier was not trained for.
        """
        try:
            self._decision(tenant.threshold, tenant.max_wrong_rate)
        except ConfigurationError as exc:
            raise ConfigurationError(f"tenant {tenant.name}: {exc}") from exc

    def uses_verifier(self) -> bool:
        return not isinstance(self.cache.decision, ThresholdDecision)

    def key_of(self, plan: Plan) -> str:
        """The key a plan's answer is stored under (no embedding needed)."""
        return self.cache.view(plan.namespace).key_for(plan.prompt, plan.scope)

    # ----------------------------------------------------------- lookups
    def lookup(self, plan: Plan, tenant: Tenant) -> CacheHit | None:
        """The hit for ``plan``, or None (blocking: call it in a worker thread)."""
        hit = self._view(plan, tenant).lookup(plan.prompt, scope=plan.scope)
        if hit is not None and not hit.exact and plan.min_similarity is not None \
                and hit.similarity < plan.min_similarity:
            return None  # x-semcache-threshold: a further bound, never a looser one
        return hit

    async def lookup_async(self, plan: Plan, tenant: Tenant) -> CacheHit | None:
        return await anyio.to_thread.run_sync(self.lookup, plan, tenant)

    def exact(self, plan: Plan) -> CacheHit | None:
        """The exact path alone (no embedding): the entry stored for this very prompt, or None (blocking)."""
        view = self.cache.view(plan.namespace)
        return exact_hit(view.backend, view.address(plan.prompt, plan.scope), None)

    # ----------------------------------------------------------- stores
    def store_later(self, plan: Plan, tenant: Tenant, record: dict[str, Any], on_done: Any) -> None:
        """Store ``record`` in the background; :meth:`drain` waits for every store started.

        Args:
            on_done: called with None when stored, or the exception when the store failed.
        """
        ttl = plan.ttl if plan.ttl is not None else tenant.ttl
        view = self._view(plan, tenant)

        async def store() -> None:
            try:
                await anyio.to_thread.run_sync(lambda: view.store(plan.prompt, record, scope=plan.scope, ttl=ttl))
            except (InvalidInputError, Exception) as exc:  # a record over the size limit, a cluster down...
                log.warning("semcache gateway: storing an answer failed: %s", exc)
                on_done(exc)
            else:
                on_done(None)

        task = asyncio.get_running_loop().create_task(store())
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def drain(self) -> None:
        """Wait for every store in flight (at shutdown)."""
        while self._stores:
            await asyncio.gather(*list(self._stores), return_exceptions=True)

    # ----------------------------------------------------------- removal
    def report_wrong_hit(self, key: str, hit: CacheHit | None) -> bool:
        """Delete a gateway entry reported wrong and record the pair when the hit is known (blocking)."""
        namespace = key.split("/", 1)[0]
        return self.cache.view(namespace).report_wrong_hit(hit if hit is not None else key)

    def invalidate(self, *, tenant: str | None, namespace: str | None, key_prefix: str | None) -> int:
        """Drop a tenant's entries, one namespace of a tenant, or every key under a prefix (blocking)."""
        backend = self.cache.backend
        if key_prefix is not None:
            deleted = 0
            while True:  # bounded: each round deletes what it found, and a round that finds nothing ends it
                keys = backend.scan(key_prefix, 1000)
                if not keys:
                    return deleted
                removed = sum(backend.delete(k) for k in keys)
                if removed == 0:
                    return deleted
                deleted += removed
        prefix = f"gw.{tenant}." + (f"{namespace}/" if namespace else "")
        return int(backend.clear_scope(prefix))

    def size(self) -> tuple[int, int]:
        """(entries, value bytes) of the backend (blocking)."""
        stats = self.cache.backend.stats()
        return int(stats.get("entries", 0)), int(stats.get("value_bytes", 0))

    def close(self) -> None:
        self.cache.close()


def sse(chunk: Mapping[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    data = chunk if isinstance(chunk, str) else json.dumps(chunk, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
