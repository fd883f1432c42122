"""Many threads on one SemanticKV: nothing is lost or torn, and the log replays to the same state."""

from __future__ import annotations

import random
import threading

import pytest

from semcache import ConfigurationError, LimitExceededError, Limits, SemanticKV
from semcache.embeddings import HashEmbedding

THREADS = 8
OPS = 150


def worker(kv: SemanticKV, number: int, errors: list[BaseException], barrier: threading.Barrier) -> None:
    pick = random.Random(number)
    try:
        barrier.wait(timeout=60)
        for i in range(OPS):
            key = f"t{number}:{pick.randrange(40)}"
            roll = pick.random()
            if roll < 0.6:
                kv.put(key, f"thread {number} writes {key} round {i} word{pick.randrange(50)}")
            elif roll < 0.75:
                kv.delete(key)
            elif roll < 0.9:
                for result in kv.search(f"thread {number} round {i}", top_k=3):
                    assert result.value.startswith(b"thread ")
            else:
                value = kv.get(key)
                assert value is None or value.startswith(f"thread {number} writes {key} ".encode())
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def hammer(kv: SemanticKV) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)
    threads = [threading.Thread(target=worker, args=(kv, n, errors, barrier)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors[0]


def test_concurrent_writers_and_readers_leave_a_consistent_store(tmp_path):
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=64), checkpoint_bytes=40_000) as kv:
        hammer(kv)
        stats = kv.stats()
        assert stats["searchable"] == stats["entries"] == len(kv.scan("", 10_000))
        state = kv._state
        for key in kv.scan("", 10_000):
            value = kv.get(key)
            assert value is not None
            # Every entry is indexed under its own vector (checked exactly: which of ~300 near-duplicate
            # texts an HNSW walk reaches first is up to the hnswlib build, not to this test).
            entry = state.entries[key]
            stored = state.indexes[entry.scope].vector(entry.label)
            assert float(stored @ kv.embedding.embed_one(value.decode())) == pytest.approx(1.0, abs=1e-5)
        digest = kv.digest()
    # The log (and checkpoints) hold the commands in the order they were applied.
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=64)) as reopened:
        assert reopened.digest() == digest


def test_limits_given_on_reopen_apply_to_new_writes(tmp_path):
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=16)) as kv:
        kv.put("big", "x" * 100)
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=16), limits=Limits(max_value_bytes=50)) as kv:
        assert kv.get("big") == b"x" * 100  # existing data is kept
        with pytest.raises(LimitExceededError, match="over the limit of 50"):
            kv.put("new", "y" * 51)


def test_a_path_that_is_a_file_is_a_configuration_error(tmp_path):
    file = tmp_path / "not-a-dir"
    file.write_text("hello")
    with pytest.raises(ConfigurationError, match="is not a directory"):
        SemanticKV(file, embedding=HashEmbedding(dim=16))
    assert file.read_text() == "hello"


def test_ef_search_given_on_reopen_applies_and_graph_settings_stay(tmp_path):
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=16), hnsw_m=8, ef_search=32) as kv:
        kv.put("k", "some text")
    with SemanticKV(tmp_path, embedding=HashEmbedding(dim=16), hnsw_m=24, ef_search=300) as kv:
        index = kv._state.indexes[""]
        assert index.settings.ef_search == 300 and index._index.ef == 300
        assert index.settings.hnsw_m == 8  # the graph was built with M=8; that cannot change
        assert kv.search("some text", top_k=1)[0].key == "k"
