"""The exceptions semcache raises, all below one root.

::

    SemcacheError
    ├── InvalidInputError (also ValueError)     bad argument: type, size, NaN, dimension...
    │   ├── LimitExceededError                  a documented size limit was crossed
    │   └── UnknownScopeError                   a scope that holds no index
    ├── EmbeddingMismatchError (also ValueError) data built with another embedder
    ├── CorruptDataError (also ValueError)      a snapshot or log that cannot be read back
    ├── ConfigurationError (also ValueError)    settings that contradict each other
    ├── ClosedError                             use after close()
    ├── MissingDependencyError (also ImportError) an optional extra is not installed
    └── ClusterError                            an operational failure of the cluster
        ├── NotLeaderError                      this replica cannot take writes (carries leader_hint)
        ├── NoQuorumError                       the shard cannot commit: a majority is down
        ├── ShardUnavailableError               no replica of a shard answered
        └── AuthenticationError                 the RPC token was missing or wrong

Misuse and bad data (the first five) are never retryable; ``ClusterError.retryable`` says
whether trying again later may succeed.
"""

from __future__ import annotations


class SemcacheError(Exception):
    """Root of every error semcache raises on purpose."""

    retryable: bool = False


class InvalidInputError(SemcacheError, ValueError):
    """An argument has the wrong type, size, shape or value."""


class LimitExceededError(InvalidInputError):
    """A documented size limit was crossed.

    Attributes:
        limit: the limit in force.
        actual: the size that was offered.
    """

    def __init__(self, what: str, actual: int, limit: int) -> None:
        super().__init__(f"{what} is {actual} bytes, over the limit of {limit} bytes")
        self.limit = limit
        self.actual = actual


class UnknownScopeError(InvalidInputError):
    """A scope was named that does not exist."""


class EmbeddingMismatchError(SemcacheError, ValueError):
    """Stored vectors were made by another embedding model or dimension."""


class CorruptDataError(SemcacheError, ValueError):
    """Stored data (a snapshot or a log record) is damaged or in a format this version cannot read."""


class ConfigurationError(SemcacheError, ValueError):
    """Settings that are invalid alone or contradict each other."""


class ClosedError(SemcacheError, RuntimeError):
    """The object was used after ``close()``."""


class MissingDependencyError(SemcacheError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the extra to install."""


# The distribution name: ``pip install 'semcache-llm[cluster]'`` (the import name is semcache).
DISTRIBUTION = "semcache-llm"


def missing_extra(package: str, extra: str, needed_for: str) -> MissingDependencyError:
    """The error to raise when importing ``package`` failed: it names the ``extra`` that installs it.

    >>> str(missing_extra("pyarrow", "cluster", "the cluster's RPC transport"))
    "pyarrow is needed for the cluster's RPC transport: pip install 'semcache-llm[cluster]'"
    """
    return MissingDependencyError(f"{package} is needed for {needed_for}: pip install '{DISTRIBUTION}[{extra}]'")


class ClusterError(SemcacheError):
    """An operational failure talking to, or inside, a cluster."""

    retryable = True

    def __init__(self, message: str, *, shard_id: str | None = None) -> None:
        super().__init__(message)
        self.shard_id = shard_id


class NotLeaderError(ClusterError):
    """The replica asked is not the leader; ``leader_hint`` names the one it believes is."""

    def __init__(self, message: str, *, shard_id: str | None = None, leader_hint: str | None = None) -> None:
        super().__init__(message, shard_id=shard_id)
        self.leader_hint = leader_hint


class NoQuorumError(ClusterError):
    """The shard could not commit the write within the timeout: no majority answered."""


class ShardUnavailableError(ClusterError):
    """No replica of the shard could be reached."""


class AuthenticationError(ClusterError):
    """The RPC token was missing or wrong."""

    retryable = False
