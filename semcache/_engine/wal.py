"""The write-ahead log's record format, and reading it back so that damage is told from a torn tail.

A record is ``[u32 length][u32 crc32][u64 seq][command bytes]``; the CRC covers
``seq`` and the command.  A write that was cut short (a kill or a power loss in
the middle of an append) can only damage the *end* of the log: whatever follows
the last intact record was never acknowledged, and may be dropped.  Damage with
intact records after it is something else (a flipped bit, a bad sector, a
stray write): the log must not be cut there, since that would silently destroy
the acknowledged writes that follow, and the evidence.  :func:`scan` reads a
log and says which of the two it found.

>>> from semcache._engine.commands import Delete
>>> log = b"".join(encode_record(seq, Delete(f"k{seq}")) for seq in (1, 2, 3))
>>> [seq for _, seq, _ in scan(log).records]
[1, 2, 3]
>>> damaged = bytearray(log); damaged[30] ^= 0xFF       # inside record 2: record 3 is intact after it
>>> found = scan(bytes(damaged))
>>> [seq for _, seq, _ in found.records], found.damage.offset, found.damage.torn_tail
([1], 24, False)
>>> scan(log[:-3]).damage.torn_tail                       # a cut-short last record
True
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from semcache._engine.commands import Command, decode_command, encode_command
from semcache.errors import CorruptDataError, InvalidInputError

RECORD_HEAD = struct.Struct("<IIQ")  # length, crc32 of (seq + command), seq
_SEQ = struct.Struct("<Q")
# How far past a damaged record to look for the next intact one, in sequence numbers:
# a bad sector holds a few dozen records of a few hundred bytes.
RESYNC_SEQUENCES = 256


def encode_frame(seq: int, payload: bytes) -> bytes:
    """One checksummed record holding ``payload`` as number ``seq`` (the Raft journal uses this framing too)."""
    body = _SEQ.pack(seq) + payload
    return struct.pack("<II", len(payload), zlib.crc32(body)) + body


def encode_record(seq: int, command: Command) -> bytes:
    """One log record for ``command``, to be applied as number ``seq``."""
    return encode_frame(seq, encode_command(command))


@dataclass(frozen=True)
class Damage:
    """The first bad record of a log.

    Attributes:
        offset: the byte where it starts.
        reason: what is wrong with it.
        next_intact: the byte where the next intact record starts, or None:
            no intact record follows, so the damage is a torn tail.
    """

    offset: int
    reason: str
    next_intact: int | None

    @property
    def torn_tail(self) -> bool:
        return self.next_intact is None


@dataclass
class FrameScan:
    """The intact records of a log up to the first bad one, undecoded, and that damage if any.

    Attributes:
        frames: ``(end offset, seq, payload)`` of each intact record before the damage.
        good_bytes: where the intact prefix ends.
        damage: the first bad record, or None for a clean log.
    """

    frames: list[tuple[int, int, bytes]] = field(default_factory=list)
    good_bytes: int = 0
    damage: Damage | None = None


@dataclass
class Scan:
    """What a log holds: its intact records up to the first bad one, and that damage if any.

    Attributes:
        records: ``(end offset, seq, command)`` of each intact record before the damage.
        good_bytes: where the intact prefix ends.
        damage: the first bad record, or None for a clean log.
    """

    records: list[tuple[int, int, Command]] = field(default_factory=list)
    good_bytes: int = 0
    damage: Damage | None = None


def scan_frames(data: bytes, start: int = 0, after_seq: int = 0) -> FrameScan:
    """Read records from ``start`` until the end of ``data`` or the first bad record, without decoding them.

    ``after_seq`` is the number before the first record's: a damaged record is
    told from a torn tail by looking for an intact record numbered after it.
    """
    found = FrameScan(good_bytes=start)
    pos, last_seq = start, after_seq
    while pos < len(data):
        reason = _bad_record(data, pos)
        if reason is not None:
            found.damage = Damage(pos, reason, _next_intact(data, pos + 1, last_seq))
            return found
        length, _, seq = RECORD_HEAD.unpack_from(data, pos)
        end = pos + RECORD_HEAD.size + length
        found.frames.append((end, seq, data[pos + RECORD_HEAD.size : end]))
        found.good_bytes, pos, last_seq = end, end, seq
    return found


def scan(data: bytes, start: int = 0, after_seq: int = 0) -> Scan:
    """Read records from ``start`` until the end of ``data`` or the first bad record.

    Raises:
        CorruptDataError: a record whose CRC matches cannot be decoded (written
            by another version, or a bug): no tail rule applies to it.
    """
    frames = scan_frames(data, start, after_seq)
    found = Scan(good_bytes=frames.good_bytes, damage=frames.damage)
    for end, seq, payload in frames.frames:
        try:
            command = decode_command(payload)
        except InvalidInputError as exc:  # the CRC matched: written so, by another version or a bug
            raise CorruptDataError(
                f"wal.log record {seq} at byte {end - len(payload) - RECORD_HEAD.size} cannot be decoded: {exc}"
            ) from exc
        found.records.append((end, seq, command))
    return found


def cut_torn_tail(path: Path, data: bytes, damage: Damage) -> Path:
    """Cut an interrupted append off the log at ``path`` (``data`` is its content), keeping the bytes beside it.

    New records must follow the last intact one, so the tail goes; its bytes
    (never acknowledged) are kept as ``<name>.torn-<offset>`` for inspection.

    Returns:
        The file the cut bytes were kept in.
    """
    kept = path.with_name(f"{path.name}.torn-{damage.offset}")
    kept.write_bytes(data[damage.offset :])
    with open(path, "r+b") as handle:
        handle.truncate(damage.offset)
    return kept


def _bad_record(data: bytes, pos: int) -> str | None:
    """Why the record at ``pos`` is not intact, or None if it is."""
    if pos + RECORD_HEAD.size > len(data):
        return f"a record header cut short ({len(data) - pos} of {RECORD_HEAD.size} bytes)"
    length, crc, _ = RECORD_HEAD.unpack_from(data, pos)
    end = pos + RECORD_HEAD.size + length
    if end > len(data):
        return f"a record of {length} bytes runs past the end of the log"
    if zlib.crc32(data[pos + 8 : end]) != crc:
        return "a record whose checksum does not match"
    return None


def _next_intact(data: bytes, start: int, last_seq: int) -> int | None:
    """Where the next intact record after a damaged one starts, or None.

    An intact record with a later sequence number is looked for by its ``seq``
    field (a fast byte search for each of the next :data:`RESYNC_SEQUENCES`
    numbers), then checked whole, CRC included: chance hits fail that check.
    """
    best: int | None = None
    for seq in range(last_seq + 1, last_seq + 1 + RESYNC_SEQUENCES):
        needle = _SEQ.pack(seq)
        hit = data.find(needle, start + 8)
        while hit != -1 and (best is None or hit - 8 < best):
            candidate = hit - 8
            if _bad_record(data, candidate) is None:
                best = candidate
                break
            hit = data.find(needle, hit + 1)
    return best


def salvage(data: bytes, after_seq: int = 0) -> tuple[list[tuple[int, Command]], list[tuple[int, int, str]]]:
    """Every intact record of a damaged log, skipping the damaged stretches.

    Returns:
        ``(records, dropped)``: ``(seq, command)`` of each intact record in log
        order, and ``(start, end, reason)`` of each stretch of bytes skipped.
    """
    records: list[tuple[int, Command]] = []
    dropped: list[tuple[int, int, str]] = []
    pos, last_seq = 0, after_seq
    while pos < len(data):
        part = scan(data, pos, last_seq)
        records += [(seq, command) for _, seq, command in part.records]
        if part.records:
            last_seq = part.records[-1][1]
        if part.damage is None:
            break
        resume = part.damage.next_intact
        dropped.append((part.damage.offset, len(data) if resume is None else resume, part.damage.reason))
        if resume is None:
            break
        pos = resume
    return records, dropped
