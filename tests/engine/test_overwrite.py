"""Overwriting a key with the vector it already has keeps its index slot."""

from __future__ import annotations

import numpy as np

from semcache._engine.commands import Put
from semcache._engine.state import ShardState


def _unit(seed: int, dim: int = 16) -> bytes:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (vector / np.linalg.norm(vector)).tobytes()


def _state() -> ShardState:
    state = ShardState(dim=16, model_id="test")
    for i in range(50):
        state.apply(Put(f"k{i}", b"old", "", _unit(i), created_at_ms=1, expires_at_ms=0))
    return state


def test_same_vector_overwrite_keeps_the_label_and_updates_the_entry() -> None:
    state = _state()
    label = state.entries["k7"].label
    state.apply(Put("k7", b"new", "", _unit(7), created_at_ms=5, expires_at_ms=99))
    entry = state.entries["k7"]
    assert (entry.label, entry.value, entry.created_at_ms, entry.expires_at_ms) == (label, b"new", 5, 99)
    assert len(state.indexes[""]) == 50
    assert state.search(np.frombuffer(_unit(7), dtype=np.float32), "", 1, None, now_ms=6)[0].key == "k7"


def test_a_new_vector_or_scope_is_reindexed() -> None:
    state = _state()
    state.apply(Put("k7", b"new", "", _unit(1000), created_at_ms=5, expires_at_ms=0))
    assert state.search(np.frombuffer(_unit(1000), dtype=np.float32), "", 1, None, now_ms=6)[0].key == "k7"
    state.apply(Put("k8", b"moved", "other", _unit(8), created_at_ms=5, expires_at_ms=0))
    assert state.entries["k8"].scope == "other" and len(state.indexes[""]) == 49
    assert state.search(np.frombuffer(_unit(8), dtype=np.float32), "other", 1, None, now_ms=6)[0].key == "k8"


def test_replicas_applying_overwrites_stay_identical() -> None:
    replicas = [_state(), _state()]
    for state in replicas:
        state.apply(Put("k3", b"again", "", _unit(3), created_at_ms=7, expires_at_ms=0))
        state.apply(Put("k4", b"moved on", "", _unit(4004), created_at_ms=7, expires_at_ms=0))
    assert replicas[0].digest() == replicas[1].digest()
