"""The embedded store's core: one :class:`ShardState`, the lock that guards it, and its write-ahead log.

Every change of an embedded store goes through :meth:`LocalState.submit`: the
command is validated, appended to the log (when the store has a directory),
applied, and the log checkpointed once it is long.  :class:`~semcache.SemanticKV`
is the API around it; a cluster replica has its own core (:mod:`semcache.cluster._raft`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from semcache._engine.commands import Command
from semcache._engine.index import IndexSettings
from semcache._engine.inputs import Limits
from semcache._engine.state import ShardState
from semcache._engine.storage import DurableLog
from semcache.embeddings import BaseEmbedding
from semcache.errors import ClosedError

log = logging.getLogger("semcache")
T = TypeVar("T")

DEFAULT_CHECKPOINT_BYTES = 64 << 20


class LocalState:
    """A :class:`ShardState`, its lock and its log (None in memory).

    Args:
        path: the data directory, or None to keep everything in memory.
        embedding: stamps the data (model id and dimension); a store built with
            another embedder is refused.
        settings: HNSW settings for new data; the query-time ``ef`` applies to stored data too.
        limits: size limits for new writes (None: the stored ones, or the defaults).
        fsync: fsync every appended command.
        checkpoint_bytes: checkpoint once the log is this long.
    """

    def __init__(
        self,
        path: str | Path | None,
        embedding: BaseEmbedding,
        settings: IndexSettings,
        limits: Limits | None,
        *,
        fsync: bool,
        checkpoint_bytes: int,
    ) -> None:
        self.lock = threading.RLock()
        self.closed = threading.Event()
        self._checkpoint_bytes = checkpoint_bytes
        self._next_checkpoint = checkpoint_bytes  # log size that triggers the next automatic checkpoint
        self.log = DurableLog(Path(path), fsync=fsync) if path is not None else None
        self.state = self._open(embedding, settings, limits)
        if limits is not None:
            # Limits only check new writes, so the caller's choice wins over the stored one.
            self.state.limits = limits
        # Likewise the query-time ef; the graph settings (M, ef_construction) stay the data's.
        if self.state.settings.ef_search != settings.ef_search:
            self.state.set_ef_search(settings.ef_search)

    def _open(self, embedding: BaseEmbedding, settings: IndexSettings, limits: Limits | None) -> ShardState:
        def new_state() -> ShardState:
            return ShardState(embedding.dim, embedding.model_id, settings, limits)

        if self.log is None:
            return new_state()
        try:
            return self.log.recover(new_state, model_id=embedding.model_id, dim=embedding.dim)
        except BaseException:
            self.log.close()  # release the directory lock so a corrected retry can open it
            raise

    def check_open(self) -> None:
        if self.closed.is_set():
            raise ClosedError("this SemanticKV is closed")

    def submit(self, command: Command) -> int:
        """Validate, log, then apply one command; its result.  Nothing is logged if validation fails."""
        with self.lock:
            self.check_open()
            self.state.validate(command)
            if self.log is not None:
                self.log.append(self.state.applied + 1, command)
            result = self.state.apply(command)
            if self.log is not None and self.log.wal_bytes >= self._next_checkpoint:
                self._auto_checkpoint()
            return result

    def _auto_checkpoint(self) -> None:
        """Checkpoint once the log is long; a failure here must not fail the write it follows.

        The command is already logged and applied, so the caller's write succeeded;
        the log keeps everything and the checkpoint is retried after another
        ``checkpoint_bytes`` of log.
        """
        assert self.log is not None
        try:
            self.log.checkpoint(self.state)
        except OSError as exc:
            log.warning("semcache: checkpoint of %s failed (%s); the log keeps every write", self.log.path, exc)
            self._next_checkpoint = self.log.wal_bytes + self._checkpoint_bytes
        else:
            self._next_checkpoint = self._checkpoint_bytes

    def read(self, fn: Callable[[ShardState], T]) -> T:
        """``fn(state)`` under the lock (how the housekeeping driver looks at the entries)."""
        with self.lock:
            return fn(self.state)

    def checkpoint(self) -> None:
        """Write a snapshot now and truncate the log (no-op in memory)."""
        with self.lock:
            self.check_open()
            if self.log is not None:
                self.log.checkpoint(self.state)

    def close(self) -> bool:
        """Checkpoint and release the directory; False if it was closed already.

        The lock on the directory is released even when the final checkpoint
        fails (a full disk: the log still holds every write; the error is raised).
        """
        with self.lock:
            if self.closed.is_set():
                return False
            self.closed.set()
            try:
                if self.log is not None:
                    self.log.checkpoint(self.state)
            finally:
                if self.log is not None:
                    self.log.close()
        return True

    def where(self) -> dict[str, Any]:
        """Where the data lives: the directory (None in memory) and the log's size."""
        return {"path": str(self.log.path) if self.log else None, "wal_bytes": self.log.wal_bytes if self.log else 0}
