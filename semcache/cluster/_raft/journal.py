"""The replica's Raft journal: checksummed records, verified when the replica starts.

pysyncobj's ``FileJournal`` (``pysyncobj/journal.py``) keeps the log in an mmap
of ``[u32 size][u64 index][u64 term][command][u32 size]`` records behind a
header holding the last record's offset; nothing is checksummed, so a flipped
bit or a half-written record is read back as a different entry, silently
(upstream has no answer to that: bakwc/PySyncObj#58).  :class:`RaftJournal`
replaces it for every replica (:func:`.compat.use_checksummed_journals` puts it
where pysyncobj creates its journal) and keeps the same interface.

Files, in the replica's data directory:

``raft.log``
    A header (:data:`MAGIC`, format, the index of the first entry, its CRC32),
    then one record per log entry in the framing of the embedded store's
    write-ahead log (:mod:`semcache._engine.wal`: ``[u32 length][u32 crc32]
    [u64 index][u64 term + command]``), so the same scan tells a torn tail from
    damage in the middle.
``raft.meta.json``
    The current term and vote (written before any message that depends on
    them, as Raft requires) and the commit index (written once a second).

What a start does with a damaged journal:

* a damaged *tail* (no intact record after it) is what a kill in the middle of
  an append leaves: that record was never acknowledged.  It is cut off, its
  bytes kept beside the journal as ``raft.log.torn-<offset>``, with a warning;
* damage with intact records after it (a flipped bit, a bad sector) refuses to
  start the replica with :class:`~semcache.errors.CorruptDataError` naming the
  file and the byte offset, and changes nothing.  The operator then stops that
  replica, wipes its data directory and starts it again: it rejoins empty and
  the leader sends it a snapshot and the log (the other replicas hold every
  committed entry).

Durability: every entry is written to the OS (one ``write``, no user-space
buffer) before the replica acknowledges it, so a kill -9 of the process
cannot lose an acknowledged entry, the promise the embedded store's log makes.
With ``raft_fsync = true`` in the cluster file the journal is also fsynced
before a follower acknowledges and before a leader counts its own copy
(:meth:`RaftJournal.sync`), which extends that to power loss.

Upgrade: a replica whose directory holds only pysyncobj's ``raft.journal``
(written by an earlier semcache) has it read once, checked (sizes at both ends
of each record, consecutive indexes), written out as ``raft.log`` and renamed to
``raft.journal.upgraded``; a legacy journal that fails those checks refuses the
start with CorruptDataError, like a damaged one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import zlib
from dataclasses import asdict, dataclass
from io import FileIO
from pathlib import Path
from typing import Any, overload

from semcache._engine import wal
from semcache.errors import ClosedError, CorruptDataError, InvalidInputError

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.log"
META_FILE = "raft.meta.json"
LEGACY_JOURNAL_FILE = "raft.journal"  # pysyncobj's FileJournal, and its pickled ``.meta`` beside it
MAGIC = b"SEMCACHE-RAFTLOG"
FORMAT = 1
_HEADER_BODY = struct.Struct("<16sIQ")  # magic, format, index of the first entry (0: none)
HEADER_SIZE = _HEADER_BODY.size + 4  # + crc32 of the above
_TERM = struct.Struct("<Q")
_CRC = struct.Struct("<I")
REWIPE_HINT = ("stop this replica, delete its data directory and start it again: it rejoins empty and "
               "catches up from the leader")

LogEntry = tuple[Any, int, int]  # pysyncobj's (command, index, term)


class JournalFile(str):
    """The journal's path as pysyncobj's ``journalFile`` setting, carrying semcache's options.

    pysyncobj passes the setting to its ``createJournal``, which
    :func:`.compat.use_checksummed_journals` replaced: given a JournalFile it
    opens a :class:`RaftJournal`.
    """

    fsync: bool

    def __new__(cls, path: str | os.PathLike[str], *, fsync: bool = False) -> JournalFile:
        made = super().__new__(cls, os.fspath(path))
        made.fsync = fsync
        return made


@dataclass
class JournalMeta:
    """What Raft keeps beside the log: the current term, the vote cast in it, and the commit index."""

    term: int = 0
    voted_for: str | None = None
    commit_index: int = 1

    @classmethod
    def load(cls, path: Path) -> JournalMeta:
        """The meta file at ``path`` (defaults if there is none).

        Raises:
            CorruptDataError: it cannot be read (a lost vote could let this replica vote twice in a term).
        """
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(int(data["term"]), None if data["voted_for"] is None else str(data["voted_for"]),
                       int(data["commit_index"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptDataError(f"{path} is damaged ({exc}): {REWIPE_HINT}") from exc

    def save(self, path: Path, *, fsync: bool) -> None:
        """Replace the meta file atomically (and durably with ``fsync``)."""
        _replace_file(path, json.dumps(asdict(self), sort_keys=True).encode(), fsync=fsync)


class RaftJournal:
    """pysyncobj's ``Journal`` interface over ``raft.log`` and ``raft.meta.json`` (see the module docstring).

    Args:
        path: the journal file (``<data dir>/raft.log``); the meta file and a
            legacy pysyncobj journal are looked for beside it.
        fsync: fsync in :meth:`sync` (and when rewriting files), not only write to the OS.

    Raises:
        CorruptDataError: the journal, its meta file or a legacy journal is damaged
            where intact records follow (the message names the file and offset).
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.meta_path = path.with_name(META_FILE)
        self._fsync = fsync
        self._entries: list[LogEntry] = []
        self._ends: list[int] = []  # where each entry's record ends in the file
        self._first_index = 0  # as the header says (0: the journal was empty when last rewritten)
        self._unsynced = False
        self._meta_saved = True
        self._file: FileIO | None = None
        legacy = path.with_name(LEGACY_JOURNAL_FILE)
        if not path.exists():
            if legacy.exists():
                self._upgrade(legacy)
            else:
                self._rewrite([])
        self._meta = JournalMeta.load(self.meta_path)
        self._load()
        if legacy.exists():  # upgraded (now, or by a start that stopped before setting it aside)
            _set_aside(legacy)
        self._reopen()

    # -------------------------------------------------------------- loading
    def _load(self) -> None:
        """Read and check the journal; cut a torn tail; refuse damage with intact records after it."""
        data = self.path.read_bytes()
        self._entries, self._ends = [], []
        self._first_index = _read_header(self.path, data)
        found = wal.scan_frames(data, HEADER_SIZE, max(0, self._first_index - 1))
        if found.damage is not None and not found.damage.torn_tail:
            raise CorruptDataError(
                f"{self.path} is damaged at byte {found.damage.offset} ({found.damage.reason}), and intact records "
                f"follow from byte {found.damage.next_intact}: this is not an interrupted write, so nothing was "
                f"changed; {REWIPE_HINT}"
            )
        expected = self._first_index
        for end, index, payload in found.frames:
            if index != expected or len(payload) < _TERM.size:
                raise CorruptDataError(
                    f"{self.path} holds entry {index} at byte {end - len(payload) - wal.RECORD_HEAD.size} where "
                    f"entry {expected} belongs; {REWIPE_HINT}"
                )
            (term,) = _TERM.unpack_from(payload)
            self._entries.append((payload[_TERM.size :], index, term))
            self._ends.append(end)
            expected += 1
        if found.damage is not None:
            kept = wal.cut_torn_tail(self.path, data, found.damage)
            logger.warning(
                "%s ended in an interrupted write (%s at byte %d); its %d bytes were never acknowledged, were cut "
                "off and kept in %s", self.path, found.damage.reason, found.damage.offset,
                len(data) - found.damage.offset, kept.name,
            )

    def _upgrade(self, legacy: Path) -> None:
        """Write pysyncobj's journal (and meta) at ``legacy`` out in this format; the caller sets it aside."""
        entries = read_legacy_journal(legacy)
        meta = read_legacy_meta(legacy.with_name(legacy.name + ".meta"))
        self._rewrite(entries, meta)
        logger.warning("upgraded pysyncobj's journal %s (%d entries) to %s", legacy, len(entries), self.path)

    # ------------------------------------------------- pysyncobj's Journal
    def add(self, command: Any, idx: int, term: int) -> None:
        """Append one entry (written to the OS before this returns)."""
        if not self._entries and idx != self._first_index:
            self._rewrite([(command, idx, term)])  # the first entry of an empty journal fixes the header's index
            return
        if self._entries and idx != self._entries[-1][1] + 1:
            raise InvalidInputError(f"journal entry {idx} does not follow entry {self._entries[-1][1]}")
        record = wal.encode_frame(idx, _TERM.pack(term) + bytes(command))
        start = self._ends[-1] if self._ends else HEADER_SIZE
        handle = self._handle()
        try:
            view = memoryview(record)
            while view:
                written = handle.write(view)
                if not written:
                    raise OSError(f"could not append to {self.path}: the write made no progress")
                view = view[written:]
        except BaseException:
            os.ftruncate(handle.fileno(), start)  # no half record behind the next one
            raise
        self._entries.append((command, idx, term))
        self._ends.append(start + len(record))
        self._unsynced = True

    def clear(self) -> None:
        """Drop every entry (a snapshot from the leader replaces the log)."""
        self._rewrite([])

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop the entries from position ``entryFrom`` on (a conflict with the leader's log)."""
        if entryFrom >= len(self._entries):
            return
        end = self._ends[entryFrom - 1] if entryFrom > 0 else HEADER_SIZE
        os.ftruncate(self._handle().fileno(), end)
        del self._entries[entryFrom:], self._ends[entryFrom:]
        self._unsynced = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the entries before position ``entryTo`` (a snapshot covers them)."""
        self._rewrite(self._entries[entryTo:])

    @overload
    def __getitem__(self, item: int) -> LogEntry: ...
    @overload
    def __getitem__(self, item: slice) -> list[LogEntry]: ...
    def __getitem__(self, item: int | slice) -> LogEntry | list[LogEntry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta.commit_index = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:
        # Never past the journal's end: a torn tail may have taken entries the last saved index covered.
        last = self._entries[-1][1] if self._entries else self._meta.commit_index
        return min(self._meta.commit_index, last)

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        # Raft: the term and vote must be durable before any message reflecting them is sent.
        self._meta.term, self._meta.voted_for = term, votedForNodeId
        self._meta.save(self.meta_path, fsync=self._fsync)
        self._meta_saved = True

    def getCurrentTerm(self) -> int:
        return self._meta.term

    def getVotedForNodeId(self) -> str | None:
        return self._meta.voted_for

    def onOneSecondTimer(self) -> None:
        if not self._meta_saved:
            self._meta.save(self.meta_path, fsync=self._fsync)
            self._meta_saved = True

    def flush(self) -> None:
        self.sync()

    def _destroy(self) -> None:
        if self._file is None:
            return
        self.onOneSecondTimer()
        self.sync()
        self._file.close()
        self._file = None

    # ------------------------------------------------------------ durability
    def sync(self) -> None:
        """With ``fsync``, make every entry written so far durable (before it is acknowledged or counted)."""
        if self._fsync and self._unsynced and self._file is not None:
            os.fsync(self._file.fileno())
        self._unsynced = False

    def _handle(self) -> FileIO:
        if self._file is None:
            raise ClosedError(f"the Raft journal {self.path} is closed")
        return self._file

    def _reopen(self) -> None:
        """(Re)open the journal for appending (unbuffered: every record goes to the OS in one write)."""
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held until _destroy()

    def _rewrite(self, entries: list[LogEntry], meta: JournalMeta | None = None) -> None:
        """Replace the journal with one holding ``entries`` (and the meta file with ``meta``), atomically."""
        first = entries[0][1] if entries else 0
        parts, ends, offset = [_header(first)], [], HEADER_SIZE
        for command, index, term in entries:
            record = wal.encode_frame(index, _TERM.pack(term) + bytes(command))
            parts.append(record)
            offset += len(record)
            ends.append(offset)
        if meta is not None:
            meta.save(self.meta_path, fsync=self._fsync)
        _replace_file(self.path, b"".join(parts), fsync=self._fsync)
        if self._file is not None:
            self._reopen()
        self._entries, self._ends, self._first_index = list(entries), ends, first
        self._unsynced = False


def _header(first_index: int) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT, first_index)
    return body + _CRC.pack(zlib.crc32(body))


def _read_header(path: Path, data: bytes) -> int:
    """The first entry's index from the journal header.

    Raises:
        CorruptDataError: the header is damaged or from another format.
    """
    if len(data) < HEADER_SIZE or zlib.crc32(data[: _HEADER_BODY.size]) != _CRC.unpack_from(data, _HEADER_BODY.size)[0]:
        raise CorruptDataError(f"{path} is damaged at byte 0 (its header does not match its checksum); {REWIPE_HINT}")
    magic, version, first_index = _HEADER_BODY.unpack_from(data)
    if magic != MAGIC or version != FORMAT:
        raise CorruptDataError(f"{path} is not a semcache Raft journal of format {FORMAT} (byte 0)")
    return int(first_index)


def _replace_file(path: Path, content: bytes, *, fsync: bool) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename (fsynced first with ``fsync``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(content)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if fsync:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _set_aside(legacy: Path) -> None:
    """Rename an upgraded pysyncobj journal (and its meta) to ``*.upgraded``, out of pysyncobj's way."""
    for path in (legacy, legacy.with_name(legacy.name + ".meta")):
        if path.exists():
            path.replace(path.with_name(path.name + ".upgraded"))


# ----------------------------------------------------------- pysyncobj's format
_LEGACY_HEADER_SIZE = 40  # name (24) + version (8) + format (4) + offset past the last record (4)
_LEGACY_U32 = struct.Struct("<I")
_LEGACY_INDEX_TERM = struct.Struct("<QQ")


def read_legacy_journal(path: Path) -> list[LogEntry]:
    """The entries of pysyncobj 0.3.17's ``FileJournal`` at ``path``, checked as far as its format allows.

    Raises:
        CorruptDataError: not such a journal, or a record whose sizes or index do not add up.
    """
    data = path.read_bytes()
    if len(data) < _LEGACY_HEADER_SIZE or not data.startswith(b"PYSYNCOBJ"):
        raise CorruptDataError(f"{path} is not a pysyncobj journal (byte 0); {REWIPE_HINT}")
    version, end = struct.unpack_from("<II", data, 32)
    if version != 1 or not _LEGACY_HEADER_SIZE <= end <= len(data):
        raise CorruptDataError(f"{path} has a damaged header (byte 32); {REWIPE_HINT}")
    entries: list[LogEntry] = []
    pos = _LEGACY_HEADER_SIZE
    while pos < end:
        size = _LEGACY_U32.unpack_from(data, pos)[0] if pos + 4 <= end else -1
        record_end = pos + 8 + size
        sizes_match = size >= _LEGACY_INDEX_TERM.size and record_end <= end
        if not sizes_match or _LEGACY_U32.unpack_from(data, record_end - 4)[0] != size:
            raise CorruptDataError(f"{path} is damaged at byte {pos} (a record's sizes do not match); {REWIPE_HINT}")
        index, term = _LEGACY_INDEX_TERM.unpack_from(data, pos + 4)
        if entries and index != entries[-1][1] + 1:
            raise CorruptDataError(
                f"{path} holds entry {index} at byte {pos} after entry {entries[-1][1]}; {REWIPE_HINT}"
            )
        entries.append((data[pos + 4 + _LEGACY_INDEX_TERM.size : record_end - 4], index, term))
        pos = record_end
    return entries


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, strings and numbers only: pysyncobj's meta file holds nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not expected in a pysyncobj meta file")


def read_legacy_meta(path: Path) -> JournalMeta:
    """The term, vote and commit index from pysyncobj's pickled ``<journal>.meta`` (defaults if there is none).

    Raises:
        CorruptDataError: it cannot be read.
    """
    if not path.exists():
        return JournalMeta()
    try:
        with open(path, "rb") as handle:
            data = _PlainData(handle).load()
        return JournalMeta(int(data.get("currentTerm", 0)), data.get("votedForNodeId"),
                           int(data.get("raftCommitIndex", 1)))
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise CorruptDataError(f"{path} is damaged ({exc}); {REWIPE_HINT}") from exc
