"""semcache: a semantic cache for LLM calls.

Embedded by default (:class:`SemanticKV`), the same engine replicated by Raft in
shards for a cluster; :class:`SemanticCache` is the LLM-cache layer over either.
"""

from semcache._cache.cache import ALL_SCOPES, CacheHit, CacheStats, SemanticCache, canonical_scope, normalize_prompt
from semcache._engine.backend import Backend, SearchResult
from semcache._engine.inputs import Limits
from semcache._engine.kv import SemanticKV
from semcache.cluster._client import DistributedSemanticKV, ShardResults
from semcache.embeddings import (
    CallableEmbedding,
    Embedding,
    HashEmbedding,
    OpenAIEmbedding,
    SentenceTransformerEmbedding,
)
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    CorruptDataError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    MissingDependencyError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
    UnknownScopeError,
)

__version__ = "0.1.0"

__all__ = [
    "ALL_SCOPES",
    "AuthenticationError",
    "Backend",
    "CacheHit",
    "CacheStats",
    "CallableEmbedding",
    "ClosedError",
    "ClusterError",
    "ConfigurationError",
    "CorruptDataError",
    "DistributedSemanticKV",
    "Embedding",
    "EmbeddingMismatchError",
    "HashEmbedding",
    "InvalidInputError",
    "LimitExceededError",
    "Limits",
    "MissingDependencyError",
    "NoQuorumError",
    "NotLeaderError",
    "OpenAIEmbedding",
    "SearchResult",
    "SemanticCache",
    "SemanticKV",
    "SemanticKVNode",
    "SemcacheError",
    "SentenceTransformerEmbedding",
    "ShardResults",
    "ShardUnavailableError",
    "UnknownScopeError",
    "__version__",
    "canonical_scope",
    "normalize_prompt",
]


def __getattr__(name: str) -> object:
    # The node pulls in pysyncobj and pyarrow.flight: load it only when asked for,
    # so the embedded store and the client import nothing of it.
    if name == "SemanticKVNode":
        from semcache.cluster._node import SemanticKVNode

        return SemanticKVNode
    raise AttributeError(f"module 'semcache' has no attribute {name!r}")
