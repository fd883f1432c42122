"""The public surface changes only on purpose: this list is pinned."""

from __future__ import annotations

import inspect

import semcache
from semcache import errors

EXPECTED = [
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
    "MissingDependencyError",
    "Limits",
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


def test_all_is_pinned_and_sorted():
    assert semcache.__all__ == EXPECTED
    assert sorted(semcache.__all__) == semcache.__all__


def test_every_exported_name_exists():
    for name in semcache.__all__:
        assert getattr(semcache, name) is not None, name


def test_every_error_class_is_exported():
    defined = {name for name, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, Exception)}
    assert defined <= set(semcache.__all__)


def test_the_error_tree_matches_its_drawing():
    tree = {
        "InvalidInputError": ("SemcacheError", ValueError),
        "LimitExceededError": ("InvalidInputError", ValueError),
        "UnknownScopeError": ("InvalidInputError", ValueError),
        "EmbeddingMismatchError": ("SemcacheError", ValueError),
        "CorruptDataError": ("SemcacheError", ValueError),
        "ConfigurationError": ("SemcacheError", ValueError),
        "ClosedError": ("SemcacheError", RuntimeError),
        "ClusterError": ("SemcacheError", Exception),
        "NotLeaderError": ("ClusterError", Exception),
        "NoQuorumError": ("ClusterError", Exception),
        "ShardUnavailableError": ("ClusterError", Exception),
        "AuthenticationError": ("ClusterError", Exception),
    }
    for name, (parent, builtin) in tree.items():
        cls = getattr(errors, name)
        assert issubclass(cls, getattr(errors, parent)) and issubclass(cls, builtin), name
    misuse = [
        errors.InvalidInputError,
        errors.EmbeddingMismatchError,
        errors.CorruptDataError,
        errors.ConfigurationError,
        errors.ClosedError,
    ]
    assert not any(cls.retryable for cls in misuse)
    assert errors.ClusterError.retryable and not errors.AuthenticationError.retryable
