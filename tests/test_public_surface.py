"""The public surface changes only on purpose: these lists are pinned, and everything else is private."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

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
        "MissingDependencyError": ("SemcacheError", ImportError),
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


# The public modules; every other module of the package is private (an underscore in its dotted path).
PUBLIC_MODULES = {
    "semcache",
    "semcache.errors",
    "semcache.embeddings",
    "semcache.cluster",
    "semcache.metrics",
    "semcache.testing",
    "semcache.integrations",
    "semcache.integrations.openai",
    "semcache.integrations.langchain",
}


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(semcache.__path__, prefix="semcache."))


def test_every_other_module_is_private():
    public = {name for name in _modules() if not any(part.startswith("_") for part in name.split("."))}
    assert public <= PUBLIC_MODULES | {"semcache.testing.openai_server"}, sorted(public - PUBLIC_MODULES)


def test_the_cluster_package_exports_a_pinned_list():
    import semcache.cluster

    assert semcache.cluster.__all__ == [
        "ClusterConfig", "DistributedSemanticKV", "LocalCluster", "Replica", "SemanticKVNode", "ShardConfig",
        "ShardResults",
    ]
    for name in semcache.cluster.__all__:
        assert getattr(semcache.cluster, name) is not None, name


def test_importing_semcache_loads_no_optional_dependency():
    """The embedded store and the cache need none of the extras: import semcache loads none of them."""
    code = (
        "import sys, semcache\n"
        "from semcache import SemanticCache, SemanticKV, DistributedSemanticKV\n"
        "optional = {'pyarrow', 'pysyncobj', 'openai', 'langchain_core', 'prometheus_client'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & optional))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
