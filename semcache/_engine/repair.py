"""Salvaging a damaged embedded store: ``semcache repair --path DIR [--drop-damaged]``.

A store whose log or snapshot is damaged refuses to open
(:class:`~semcache.errors.CorruptDataError`) rather than guess.  :func:`repair`
says what is intact and what is not; with ``drop_damaged=True`` it rebuilds the
store from the intact parts (the snapshot if it checks out, then every intact
log record), writes a fresh checkpoint, and moves the damaged files into
``damaged-<time>/`` beside the data, so nothing is deleted.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from semcache._engine import wal
from semcache._engine.index import IndexSettings
from semcache._engine.snapshot import read_snapshot
from semcache._engine.state import ShardState
from semcache._engine.storage import DurableLog
from semcache.errors import CorruptDataError, InvalidInputError


@dataclass
class RepairReport:
    """What :func:`repair` found, and did.

    Attributes:
        path: the store's data directory.
        snapshot_error: why the snapshot could not be read, or None if it checks out (or there is none).
        records_kept: intact log records that were (or would be) replayed.
        dropped: ``(start, end, reason)`` of each damaged stretch of ``wal.log``.
        entries: entries in the repaired store (or the one it would be).
        moved_to: where the damaged files went, when repaired.
    """

    path: Path
    snapshot_error: str | None = None
    records_kept: int = 0
    dropped: list[tuple[int, int, str]] = field(default_factory=list)
    entries: int = 0
    moved_to: Path | None = None

    @property
    def damaged(self) -> bool:
        return self.snapshot_error is not None or bool(self.dropped)

    def lines(self) -> list[str]:
        """The report as ``semcache repair`` prints it."""
        out = [f"store: {self.path}"]
        out.append(f"snapshot: {'DAMAGED: ' + self.snapshot_error if self.snapshot_error else 'intact'}")
        if self.snapshot_error:
            out.append("  the entries it held are lost (the log only holds the writes made after it)")
        out.append(f"log: {self.records_kept} intact records")
        for start, end, reason in self.dropped:
            out.append(f"  damaged bytes {start}..{end} ({end - start} bytes): {reason}")
        out.append(f"entries after repair: {self.entries}")
        if self.moved_to is not None:
            out.append(f"repaired; the damaged files were moved to {self.moved_to}")
        elif self.damaged:
            out.append("nothing was changed: run again with --drop-damaged to rebuild the store without the damage")
        else:
            out.append("nothing to repair")
        return out


def repair(path: Path, *, drop_damaged: bool = False) -> RepairReport:
    """Check a store's snapshot and log; with ``drop_damaged``, rebuild it from what is intact.

    Raises:
        InvalidInputError: ``path`` is not a semcache data directory.
        ConfigurationError: the store is open in another process.
    """
    path = Path(path)
    if not (path / "embedding.json").is_file():
        raise InvalidInputError(f"{path} is not a semcache data directory (no embedding.json)")
    stamp = json.loads((path / "embedding.json").read_text())
    report = RepairReport(path)
    store = DurableLog(path)  # holds the directory lock while we look
    try:
        state = _intact_snapshot(store.snapshot_dir, report) or ShardState(
            int(stamp["dim"]), str(stamp["model_id"]), IndexSettings()
        )
        log_path = path / "wal.log"
        records, report.dropped = wal.salvage(log_path.read_bytes()) if log_path.exists() else ([], [])
        report.records_kept = len(records)
        for seq, command in records:
            if seq > state.applied:
                state.validate(command)
                state.apply(command)
        report.entries = len(state.entries)
        if drop_damaged and report.damaged:
            report.moved_to = _set_aside(path, damaged_snapshot=report.snapshot_error is not None)
            store.checkpoint(state)
    finally:
        store.close()
    return report


def _intact_snapshot(directory: Path, report: RepairReport) -> ShardState | None:
    if not directory.exists():
        return None
    try:
        return read_snapshot(directory)
    except CorruptDataError as exc:
        report.snapshot_error = str(exc)
        return None


def _set_aside(path: Path, *, damaged_snapshot: bool) -> Path:
    """Move the log (and a damaged snapshot) into a new ``damaged-<time>/`` folder; return it."""
    target = path / time.strftime("damaged-%Y%m%d-%H%M%S")
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir()
    if (path / "wal.log").exists():
        shutil.move(str(path / "wal.log"), target / "wal.log")
    if damaged_snapshot and (path / "snapshot").exists():
        shutil.move(str(path / "snapshot"), target / "snapshot")
    return target
