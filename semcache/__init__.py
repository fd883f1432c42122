"""semcache: a semantic cache for LLM calls.

Embedded by default (:class:`SemanticKV`), the same engine replicated by Raft in
shards for a cluster; :class:`SemanticCache` is the LLM-cache layer over either.
"""

from .backend import Backend, SearchResult
from .cache import ALL_SCOPES, CacheHit, CacheStats, SemanticCache, canonical_scope, normalize_prompt
from .client import DistributedSemanticKV, ShardResults
from .embeddings import (
    CallableEmbedding,
    Embedding,
    HashEmbedding,
    OpenAIEmbedding,
    SentenceTransformerEmbedding,
)
from .errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    EmbeddingMismatchError,
    InvalidInputError,
    LimitExceededError,
    NoQuorumError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
    UnknownScopeError,
)
from .kv import SemanticKV
from .state import Limits

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
    "DistributedSemanticKV",
    "Embedding",
    "EmbeddingMismatchError",
    "HashEmbedding",
    "InvalidInputError",
    "LimitExceededError",
    "Limits",
    "NoQuorumError",
    "NotLeaderError",
    "OpenAIEmbedding",
    "SearchResult",
    "SemanticCache",
    "SemanticKV",
    "SemcacheError",
    "SentenceTransformerEmbedding",
    "ShardResults",
    "ShardUnavailableError",
    "UnknownScopeError",
    "__version__",
    "canonical_scope",
    "normalize_prompt",
]
