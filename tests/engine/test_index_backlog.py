"""Deferred indexing: queued hnswlib calls change when the graph is built, never what it becomes.

A replica with an index backlog applies a put at once (the vector is
searchable by an exact scan of the backlog) and runs the hnswlib insert when
it has time.  Replicas that drain at different moments must still agree byte
for byte, and a search must never miss or misreport a vector because its
insert is still queued.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from semcache._engine.commands import Put
from semcache._engine.index import IndexSettings, VectorIndex
from semcache._engine.state import ShardState

from .test_state_determinism import DIM, SCOPES, SETTINGS, command_stream, queries


def fed_with_backlog(commands, backlog: int, seed: int) -> ShardState:
    """Apply ``commands``, draining a random number of queued calls between them."""
    pick = random.Random(seed)
    state = ShardState(DIM, "test-model", SETTINGS, index_backlog=backlog)
    for command in commands:
        state.validate(command)
        state.apply(command)
        if pick.random() < 0.3:
            state.index_pending(pick.randint(1, 8))
        # The running count the bound and the applier read equals the indexes' own queues.
        assert state.queued_index_ops == sum(index.queued for index in state.indexes.values())
    return state


def top(state: ShardState, now_ms: int = 2_000_000) -> tuple[list[list[str]], np.ndarray]:
    """Every scope's top-5 keys for fixed queries, and their similarities (compared within float32 noise)."""
    found = [state.search(q, scope, 5, None, now_ms) for scope in SCOPES for q in queries(0)]
    return [[m.key for m in matches] for matches in found], np.array([m.similarity for ms in found for m in ms])


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1)[:, None]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_backlogged_replica_ends_byte_identical_to_an_eager_one(seed):
    stream = command_stream(seed, 1_500)
    eager = fed_with_backlog(stream, backlog=0, seed=seed)
    lazy = fed_with_backlog(stream, backlog=200, seed=seed + 100)
    other = fed_with_backlog(stream, backlog=50, seed=seed + 200)
    assert lazy.queued_index_ops > 0  # the stream really left inserts queued
    (lazy_keys, lazy_sims), (eager_keys, eager_sims) = top(lazy), top(eager)
    assert lazy_keys == eager_keys  # searches agree before the backlog is drained
    assert np.allclose(lazy_sims, eager_sims, atol=1e-5)
    assert lazy.digest() == eager.digest() == other.digest()  # a snapshot indexes the backlog first
    assert lazy.queued_index_ops == 0


def test_every_applied_vector_is_found_while_its_insert_is_queued():
    index = VectorIndex(16, IndexSettings(max_entries=8), backlog=10_000)
    vectors = unit_vectors(300, 16, seed=4)
    labels = [index.add(v) for v in vectors]
    assert index.queued == 300 and index.slots >= 300
    for label, v in zip(labels, vectors, strict=True):
        assert index.search(v, 1)[0] == (label, pytest.approx(1.0, abs=1e-5))
    index.index_pending(150)  # half in the graph, half still queued: both halves are found
    assert index.queued == 150
    assert all(index.search(v, 1)[0][0] == label for label, v in zip(labels, vectors, strict=True))


def test_a_removed_or_replaced_vector_is_never_returned_before_its_call_runs():
    vectors = unit_vectors(40, 8, seed=5)
    index = VectorIndex(8, IndexSettings(max_entries=64), backlog=100)
    for v in vectors[:20]:
        index.add(v)
    index.index_pending()  # labels 0..19 are in the graph
    index.remove(3)  # queued: the graph still holds label 3
    assert all(label != 3 for label, _ in index.search(vectors[3], 5))
    assert index.add(vectors[30]) == 3  # the freed label is reused for another vector, also queued
    ((label, similarity),) = index.search(vectors[30], 1)
    assert label == 3 and similarity == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(index.vector(3), vectors[30], atol=1e-6)
    assert all(sim < 0.999 for _, sim in index.search(vectors[3], 5))  # the old vector is gone
    index.index_pending()
    assert index.search(vectors[30], 1)[0][0] == 3
    assert np.allclose(index.vector(3), vectors[30], atol=1e-6)


def test_the_backlog_is_bounded():
    index = VectorIndex(8, IndexSettings(max_entries=64), backlog=25)
    for v in unit_vectors(200, 8, seed=6):
        index.add(v)
        assert index.queued <= 25
    assert index.queued == 25 and len(index) == 200


def test_lowering_the_backlog_indexes_the_excess_at_once():
    state = ShardState(DIM, "test-model", SETTINGS, index_backlog=500)
    for command in command_stream(7, 400):
        state.apply(command)
    assert state.queued_index_ops > 10
    state.set_index_backlog(10)
    assert state.queued_index_ops == 10
    state.set_index_backlog(0)
    assert state.queued_index_ops == 0


def test_expired_and_filtered_labels_stay_hidden_in_the_backlog():
    vectors = unit_vectors(50, 8, seed=8)
    index = VectorIndex(8, IndexSettings(max_entries=64), backlog=100)
    for v in vectors:
        index.add(v)
    odd = index.search(vectors[0], 5, accept=lambda label: label % 2 == 1)
    assert len(odd) == 5 and all(label % 2 == 1 for label, _ in odd)
    assert index.search(vectors[0], 5, accept=lambda label: False) == []


def test_the_bound_holds_over_all_scopes_together():
    """Thousands of tenant scopes must not each get a backlog of their own."""
    state = ShardState(8, "test-model", IndexSettings(max_entries=16), index_backlog=40)
    vectors = unit_vectors(600, 8, seed=9)
    for i, vector in enumerate(vectors):
        state.apply(Put(f"k{i}", b"v", f"tenant-{i % 50}", vector.tobytes(), 0, 0))
        assert state.queued_index_ops <= 40
    assert state.queued_index_ops == 40 and len(state.indexes) == 50
    for i in (0, 17, 599):  # queued or indexed, every vector is found in its own scope only
        (match,) = state.search(vectors[i], f"tenant-{i % 50}", 1, None, 0)
        assert match.key == f"k{i}"


def test_overwrites_while_the_insert_is_queued():
    """The same-vector shortcut and a real overwrite both work on a vector still in the backlog."""
    state = ShardState(8, "test-model", IndexSettings(max_entries=16), index_backlog=100)
    first, second = unit_vectors(2, 8, seed=10)
    state.apply(Put("k", b"one", "", first.tobytes(), 0, 0))
    queued = state.queued_index_ops
    state.apply(Put("k", b"two", "", first.tobytes(), 1, 0))  # same vector: keeps its slot, queues nothing
    assert state.queued_index_ops == queued
    (match,) = state.search(first, "", 1, None, 2)
    assert (match.key, match.entry.value) == ("k", b"two")
    state.apply(Put("k", b"three", "", second.tobytes(), 3, 0))  # a new vector for the key
    (match,) = state.search(second, "", 1, None, 4)
    assert (match.key, match.entry.value, round(match.similarity, 4)) == ("k", b"three", 1.0)
    eager = ShardState(8, "test-model", IndexSettings(max_entries=16))
    for value, vector, at in ((b"one", first, 0), (b"two", first, 1), (b"three", second, 3)):
        eager.apply(Put("k", value, "", vector.tobytes(), at, 0))
    assert state.digest() == eager.digest()
