"""Commands: every mutation of a shard's state, as a record applied in order.

Whoever issues a command (the embedded engine, or a Raft leader) chooses
everything that could differ between replicas: the vector, the timestamps,
which keys to expire or evict.  Replicas only apply.  That is what makes two
engines fed one command stream byte-identical.

Commands encode to a compact, versioned binary form (no pickle), used by the
write-ahead log and as the Raft log payload.

>>> cmd = Put(key="k", value=b"v", scope="", vector=None, created_at_ms=1, expires_at_ms=0)
>>> decode_command(encode_command(cmd)) == cmd
True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from semcache.errors import InvalidInputError

CODEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class Put:
    """Insert or replace ``key``.  ``vector`` is raw float32 bytes, or None for unsearchable values."""

    key: str
    value: bytes
    scope: str
    vector: bytes | None
    created_at_ms: int
    expires_at_ms: int  # 0 means never


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove one key (a no-op when absent, so a retry is harmless)."""

    key: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Remove every entry whose scope starts with ``scope_prefix`` ("" clears everything)."""

    scope_prefix: str


@dataclass(frozen=True, slots=True)
class Expire:
    """Remove every entry with ``0 < expires_at_ms <= now_ms``; ``now_ms`` is the issuer's clock."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Evict:
    """Remove the listed keys, chosen by the issuer's eviction policy."""

    keys: tuple[str, ...]


Command = Put | Delete | Clear | Expire | Evict

_TAGS: dict[type, int] = {Put: 1, Delete: 2, Clear: 3, Expire: 4, Evict: 5}
_HEADER = struct.Struct("<BB")  # codec version, command tag
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


def _pack_bytes(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _pack_str(text: str) -> bytes:
    return _pack_bytes(text.encode("utf-8"))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise InvalidInputError("truncated command record")
        chunk = self._data[self._pos : end].tobytes()
        self._pos = end
        return chunk

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self.take(8))[0])

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def str_(self) -> str:
        try:
            return self.bytes_().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"command record holds text that is not valid UTF-8: {exc.reason}") from exc

    def done(self) -> None:
        if self._pos != len(self._data):
            raise InvalidInputError("trailing bytes after command record")


def encode_command(command: Command) -> bytes:
    """Serialise a command to bytes."""
    tag = _TAGS[type(command)]
    parts = [_HEADER.pack(CODEC_VERSION, tag)]
    match command:
        case Put():
            parts += [
                _pack_str(command.key),
                _pack_bytes(command.value),
                _pack_str(command.scope),
                b"\x00" if command.vector is None else b"\x01" + _pack_bytes(command.vector),
                _I64.pack(command.created_at_ms),
                _I64.pack(command.expires_at_ms),
            ]
        case Delete():
            parts.append(_pack_str(command.key))
        case Clear():
            parts.append(_pack_str(command.scope_prefix))
        case Expire():
            parts.append(_I64.pack(command.now_ms))
        case Evict():
            parts.append(_U32.pack(len(command.keys)))
            parts += [_pack_str(key) for key in command.keys]
    return b"".join(parts)


def decode_command(data: bytes) -> Command:
    """Parse bytes made by :func:`encode_command`.

    Raises:
        InvalidInputError: unknown version or tag, or a malformed record.
    """
    reader = _Reader(data)
    version, tag = _HEADER.unpack(reader.take(_HEADER.size))
    if version != CODEC_VERSION:
        raise InvalidInputError(f"unknown command codec version {version}")
    command: Command
    if tag == 1:
        key, value, scope = reader.str_(), reader.bytes_(), reader.str_()
        flag = reader.take(1)
        if flag not in (b"\x00", b"\x01"):
            raise InvalidInputError(f"bad vector flag {flag!r} in put record")
        vector = reader.bytes_() if flag == b"\x01" else None
        command = Put(key, value, scope, vector, reader.i64(), reader.i64())
    elif tag == 2:
        command = Delete(reader.str_())
    elif tag == 3:
        command = Clear(reader.str_())
    elif tag == 4:
        command = Expire(reader.i64())
    elif tag == 5:
        command = Evict(tuple(reader.str_() for _ in range(reader.u32())))
    else:
        raise InvalidInputError(f"unknown command tag {tag}")
    reader.done()
    return command
