"""Consistent hashing of keys onto shards.

A :class:`HashRing` places ``vnodes`` virtual points per shard on a 64-bit
ring; a key belongs to the shard owning the first point at or after the key's
own hash.  The hash is blake2b, so every client process, on any machine and
any Python (no ``PYTHONHASHSEED``), routes a key to the same shard.  Adding a
shard moves only the keys that now land on its points (about ``1/(n+1)`` of
them); the rest stay where they were.

>>> ring = HashRing(["shard-0", "shard-1"])
>>> ring.shard_for("user:42") in {"shard-0", "shard-1"}
True
>>> ring.shard_for("user:42") == HashRing(["shard-1", "shard-0"]).shard_for("user:42")
True
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from semcache._engine.inputs import whole_number
from semcache.errors import ConfigurationError, InvalidInputError

DEFAULT_VNODES = 128


def ring_hash(text: str) -> int:
    """A stable 64-bit position on the ring for ``text``."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class HashRing:
    """Shard ids on a consistent-hash ring with virtual nodes.

    Args:
        shard_ids: the shards; order does not matter.
        vnodes: virtual points per shard; more points give a more even split.

    Raises:
        ConfigurationError: no shards, a repeated shard id, or ``vnodes < 1``.
    """

    def __init__(self, shard_ids: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        shards = list(shard_ids)
        if not shards:
            raise ConfigurationError("a hash ring needs at least one shard")
        if len(set(shards)) != len(shards):
            raise ConfigurationError(f"shard ids must be unique, got {shards}")
        whole_number(vnodes, "vnodes", minimum=1, error=ConfigurationError)
        self.vnodes = vnodes
        self.shard_ids: tuple[str, ...] = tuple(sorted(shards))
        # Ties between points (astronomically rare) break by shard id, so every
        # client builds the same ring.
        points = sorted((ring_hash(f"{shard}#{i}"), shard) for shard in self.shard_ids for i in range(vnodes))
        self._positions = [position for position, _ in points]
        self._owners = [shard for _, shard in points]

    def shard_for(self, key: str) -> str:
        """The shard that owns ``key``.

        Raises:
            InvalidInputError: ``key`` is not a str.
        """
        if not isinstance(key, str):
            raise InvalidInputError(f"key must be str, got {type(key).__name__}")
        slot = bisect.bisect_left(self._positions, ring_hash(key))
        return self._owners[slot % len(self._owners)]

    def __len__(self) -> int:
        return len(self.shard_ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashRing) and (self.shard_ids, self.vnodes) == (other.shard_ids, other.vnodes)

    def __hash__(self) -> int:
        return hash((self.shard_ids, self.vnodes))

    def __repr__(self) -> str:
        return f"HashRing({list(self.shard_ids)!r}, vnodes={self.vnodes})"
