"""HashRing: stable, balanced, and moves few keys when a shard is added."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from semcache.cluster._routing import HashRing
from semcache.errors import ConfigurationError, InvalidInputError

KEYS = [f"key:{i}" for i in range(20_000)]


def test_routing_is_independent_of_shard_order_and_process() -> None:
    ring = HashRing(["a", "b", "c"])
    assert [ring.shard_for(k) for k in KEYS[:200]] == [HashRing(["c", "a", "b"]).shard_for(k) for k in KEYS[:200]]
    # Another interpreter with another hash seed routes the same way: the hash is not Python's hash().
    code = "from semcache.cluster._routing import HashRing; r = HashRing(['a','b','c']); print(r.shard_for('key:7'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert other.stdout.strip() == ring.shard_for("key:7")


def test_keys_spread_evenly_over_shards() -> None:
    ring = HashRing([f"shard-{i}" for i in range(4)])
    counts = Counter(ring.shard_for(k) for k in KEYS)
    assert set(counts) == set(ring.shard_ids)
    share = [n / len(KEYS) for n in counts.values()]
    assert max(share) < 0.25 * 1.25 and min(share) > 0.25 * 0.75, counts


def test_adding_a_shard_moves_only_keys_to_the_new_shard() -> None:
    before = HashRing(["shard-0", "shard-1", "shard-2"])
    after = HashRing(["shard-0", "shard-1", "shard-2", "shard-3"])
    moved = [k for k in KEYS if before.shard_for(k) != after.shard_for(k)]
    assert all(after.shard_for(k) == "shard-3" for k in moved)
    # Ideal movement is 1/4 of the keys; a modulo scheme would move about 3/4.
    assert 0.15 < len(moved) / len(KEYS) < 0.35


def test_single_shard_owns_everything() -> None:
    ring = HashRing(["only"])
    assert {ring.shard_for(k) for k in KEYS[:100]} == {"only"}


@pytest.mark.parametrize(
    ("shards", "vnodes"), [([], 128), (["a", "a"], 128), (["a"], 0), (["a"], True)]
)
def test_bad_ring_settings_are_configuration_errors(shards: list[str], vnodes: int) -> None:
    with pytest.raises(ConfigurationError):
        HashRing(shards, vnodes=vnodes)


def test_non_str_key_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        HashRing(["a"]).shard_for(b"bytes")  # type: ignore[arg-type]


def test_rings_compare_by_shards_and_vnodes() -> None:
    assert HashRing(["a", "b"]) == HashRing(["b", "a"])
    assert HashRing(["a", "b"]) != HashRing(["a", "b"], vnodes=64)
