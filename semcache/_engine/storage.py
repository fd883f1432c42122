"""Durable storage for an embedded store: an atomic snapshot plus a write-ahead log.

Layout of a data directory::

    LOCK           held (flock) by the one process that has the store open
    embedding.json the embedder's model id and dimension, written at creation
    snapshot/      the last checkpoint, a ShardState snapshot
    wal.log        commands applied since then, one framed record each

Each command is appended as a checksummed record (:mod:`semcache._engine.wal`),
flushed to the OS, before it is applied, so once ``put`` returns a kill -9
cannot lose it; ``fsync=True`` extends that to power loss.  Recovery loads the
snapshot (every file checked against its checksum, :mod:`semcache._engine.snapshot`)
and replays the records with a higher ``seq``:

* a damaged *tail* (nothing intact after it) is what an interrupted append
  leaves: it is cut off, its bytes kept beside the log as
  ``wal.log.torn-<offset>``, with a warning;
* damage with intact records after it fails the open with
  :class:`~semcache.errors.CorruptDataError` naming the file and offset, and
  changes nothing on disk: ``semcache repair`` salvages what is intact.

A checkpoint writes ``snapshot.new/``, swaps it in with renames (the previous
one survives as ``snapshot.old/`` until the swap is complete) and then starts an
empty log.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable
from io import FileIO
from pathlib import Path

from semcache._engine import wal
from semcache._engine.commands import Command as CommandT
from semcache._engine.state import ShardState
from semcache.errors import ClosedError, ConfigurationError, CorruptDataError, EmbeddingMismatchError

log = logging.getLogger("semcache")


class DurableLog:
    """Write-ahead log and checkpoints for one :class:`ShardState` in ``path``."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigurationError(f"{self.path} is not a directory; path= names the store's data directory")
        # Only its owner may enter a new data directory: it holds every cached prompt and answer.
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock_file = open(self.path / "LOCK", "a+b")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise ConfigurationError(f"{self.path} is already open in another process") from exc
        # Unbuffered: a failed append leaves no bytes in a Python buffer, only a
        # tail on disk that append() cuts off again.
        self._wal: FileIO | None = None
        self._broken = False
        self.wal_bytes = 0

    @property
    def snapshot_dir(self) -> Path:
        return self.path / "snapshot"

    def recover(self, new_state: Callable[[], ShardState], *, model_id: str, dim: int) -> ShardState:
        """Load the last checkpoint and replay the log after it."""
        for stale in ("snapshot.new",):
            shutil.rmtree(self.path / stale, ignore_errors=True)
        old = self.path / "snapshot.old"
        if old.exists() and not self.snapshot_dir.exists():
            old.rename(self.snapshot_dir)  # a checkpoint died between its two renames
        shutil.rmtree(old, ignore_errors=True)
        self._check_stamp(model_id=model_id, dim=dim)
        if (self.snapshot_dir / "state.json").exists():
            state = ShardState.restore(self.snapshot_dir, model_id=model_id, dim=dim)
        else:
            state = new_state()
        good_bytes = 0
        wal_path = self.path / "wal.log"
        if wal_path.exists():
            data = wal_path.read_bytes()
            found = wal.scan(data)
            if found.damage is not None and not found.damage.torn_tail:
                raise CorruptDataError(
                    f"{wal_path} is damaged at byte {found.damage.offset} ({found.damage.reason}), and intact records "
                    f"follow from byte {found.damage.next_intact}: this is not an interrupted write, so nothing was "
                    f"changed. `semcache repair --path {self.path}` reports what can be salvaged."
                )
            for _, seq, command in found.records:
                if seq > state.applied:
                    state.apply(command)
            good_bytes = found.good_bytes
            if found.damage is not None:
                self._drop_torn_tail(wal_path, data, found.damage)
        # Stamped only once recovery has succeeded, so a refused open leaves no wrong stamp.
        self._write_stamp(model_id=model_id, dim=dim)
        self._wal = open(wal_path, "ab", buffering=0)  # noqa: SIM115 - held until close()
        if self._fsync:
            _fsync_dir(self.path)  # a newly created log must survive power loss as a directory entry too
        self.wal_bytes = good_bytes
        return state

    def _drop_torn_tail(self, wal_path: Path, data: bytes, damage: wal.Damage) -> None:
        """Cut an interrupted append off the log (new records must follow the last intact one), keeping its bytes."""
        kept = wal.cut_torn_tail(wal_path, data, damage)
        log.warning(
            "semcache: %s ended in an interrupted write (%s at byte %d); its %d bytes were never acknowledged, "
            "were cut off and kept in %s",
            wal_path, damage.reason, damage.offset, len(data) - damage.offset, kept.name,
        )

    def _check_stamp(self, *, model_id: str, dim: int) -> None:
        """Refuse data made by another embedder, even before its first checkpoint.

        The snapshot carries the same stamp, but a store that crashed before
        checkpointing has only its log, whose vectors mean nothing to another model.
        """
        stamp_path = self.path / "embedding.json"
        if stamp_path.exists():
            try:
                stamp = json.loads(stamp_path.read_text())
                if not isinstance(stamp, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise CorruptDataError(f"{stamp_path} is damaged: {exc}") from exc
            if (stamp.get("model_id"), stamp.get("dim")) != (model_id, dim):
                raise EmbeddingMismatchError(
                    f"{self.path} was built with {stamp.get('model_id')} (dim {stamp.get('dim')}); "
                    f"it cannot be opened with {model_id} (dim {dim})"
                )

    def _write_stamp(self, *, model_id: str, dim: int) -> None:
        stamp_path = self.path / "embedding.json"
        if stamp_path.exists():
            return
        tmp = self.path / "embedding.json.tmp"
        tmp.write_text(json.dumps({"model_id": model_id, "dim": dim}, sort_keys=True))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.rename(stamp_path)
        _fsync_dir(self.path)

    def append(self, seq: int, command: CommandT) -> None:
        """Append one command (to be applied as number ``seq``) and flush it to the OS."""
        if self._broken:
            raise ClosedError(f"the write-ahead log in {self.path} failed and could not be repaired; reopen the store")
        if self._wal is None:
            raise ConfigurationError("recover() must run before append()")
        record = wal.encode_record(seq, command)
        try:
            view = memoryview(record)
            while view:
                written = self._wal.write(view)
                if not written:
                    raise OSError(f"could not append to {self.path / 'wal.log'}: the write made no progress")
                view = view[written:]
            if self._fsync:
                os.fsync(self._wal.fileno())
        except BaseException:
            # Disk full, I/O error...: cut the partial record off, or the next
            # acknowledged records would sit behind a torn one that recovery stops at.
            self._cut_tail()
            raise
        self.wal_bytes += len(record)

    def _cut_tail(self) -> None:
        assert self._wal is not None
        try:
            os.ftruncate(self._wal.fileno(), self.wal_bytes)
        except OSError:
            self._broken = True

    def checkpoint(self, state: ShardState) -> None:
        """Write ``state`` as the new snapshot and start an empty log."""
        new = self.path / "snapshot.new"
        shutil.rmtree(new, ignore_errors=True)
        state.snapshot(new)
        _fsync_tree(new)
        old = self.path / "snapshot.old"
        if self.snapshot_dir.exists():
            self.snapshot_dir.rename(old)
        new.rename(self.snapshot_dir)
        _fsync_dir(self.path)
        # Replay skips records at or below state.applied, so a crash before this
        # truncation is harmless.
        if self._wal is not None:
            self._wal.close()
        self._wal = open(self.path / "wal.log", "wb", buffering=0)  # noqa: SIM115 - held until close()
        self.wal_bytes = 0
        self._broken = False  # the snapshot holds everything; the fresh log has no bad tail
        shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


def _fsync_tree(directory: Path) -> None:
    for file in directory.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
