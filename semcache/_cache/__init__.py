"""The LLM-cache layer: scopes and keys, the exact and semantic lookup paths, the hit guard.

:class:`~.cache.SemanticCache` turns a prompt and its scope into a key and an
index partition, then asks any :class:`~semcache._engine.backend.Backend` (the
embedded store or the cluster client).  The adapters in
:mod:`semcache.integrations` are built on it.
"""
