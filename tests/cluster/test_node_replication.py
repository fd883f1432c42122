"""ReplicatedShard in-process: batch codec, entry-size limits, snapshot + journal recovery, a damaged journal.

A one-replica shard is its own majority, so these run without other processes
(the multi-process behaviour is in test_node_cluster.py).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pysyncobj import tcp_connection

from semcache._engine import wal
from semcache._engine.commands import Delete, Evict, Put, encode_command
from semcache._engine.housekeeping import chunk_keys
from semcache._engine.state import ShardState
from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.cluster._local import free_ports
from semcache.cluster._raft.compat import journal
from semcache.cluster._raft.group_commit import pack_batch, unpack_batch
from semcache.cluster._raft.journal import JOURNAL_FILE
from semcache.cluster._raft.replica import ReplicatedShard
from semcache.cluster._sizes import MAX_ENTRY_BYTES, RAFT_MESSAGE_LIMIT
from semcache.errors import CorruptDataError, InvalidInputError, LimitExceededError

# Real pysyncobj groups in this process (Raft timers, threads): seconds each.
pytestmark = pytest.mark.slow

DIM = 16


def _config(tmp_path: Path, **settings: object) -> ClusterConfig:
    raft, rpc = free_ports(2)
    shard = ShardConfig("s0", (Replica("r0", f"127.0.0.1:{raft}", f"grpc://127.0.0.1:{rpc}"),))
    path = tmp_path / "cluster.toml"
    ClusterConfig(secret="s", shards=(shard,), embedding=f"hash:{DIM}", data_dir="data", **settings).dump(path)
    return ClusterConfig.load(path)


@pytest.fixture
def open_shard(tmp_path: Path) -> Iterator[Callable[..., ReplicatedShard]]:
    opened: list[ReplicatedShard] = []

    def open_(config: ClusterConfig | None = None) -> ReplicatedShard:
        shard = ReplicatedShard(config or _config(tmp_path), "r0")
        opened.append(shard)
        deadline = time.monotonic() + 20
        while not shard.is_leader():
            assert time.monotonic() < deadline, "a one-replica shard did not elect itself"
            time.sleep(0.05)
        return shard

    yield open_
    for shard in opened:
        shard.close()


def _put(key: str, value: bytes = b"v", scope: str = "") -> Put:
    vec = np.zeros(DIM, dtype=np.float32)
    vec[hash(key) % DIM] = 1.0
    return Put(key, value, scope, vec.tobytes(), 1, 0)


def test_batch_codec_round_trips_and_rejects_trailing_bytes() -> None:
    items = [encode_command(_put("a")), encode_command(Delete("b")), b""]
    assert unpack_batch(pack_batch(items)) == items
    with pytest.raises(InvalidInputError):
        unpack_batch(pack_batch(items) + b"x")


def test_raft_messages_go_out_stored_and_stock_zlib_reads_them(open_shard: Callable[..., ReplicatedShard]) -> None:
    open_shard()  # a replica switches its process's pysyncobj transport over
    message = np.random.default_rng(1).standard_normal(384).astype(np.float32).tobytes() + b"v" * 200
    sent = tcp_connection.zlib.compress(message, 3)  # the call pysyncobj makes
    assert zlib.decompress(sent) == message and len(sent) > len(message)  # stored, not compressed
    assert tcp_connection.zlib.decompress(zlib.compress(message, 3)) == message  # and it reads compressed peers


def test_evictions_are_split_into_commands_that_each_fit_one_entry() -> None:
    keys = [f"{i:04d}-" + "k" * 1000 for i in range(200)]  # ~200 KiB of keys
    chunks = chunk_keys(keys, MAX_ENTRY_BYTES // 2)
    assert [key for chunk in chunks for key in chunk] == keys
    assert all(len(encode_command(Evict(tuple(chunk)))) < MAX_ENTRY_BYTES for chunk in chunks)
    assert len(chunks) > 1


def test_writes_commit_and_oversize_commands_are_refused_before_logging(
    open_shard: Callable[..., ReplicatedShard], tmp_path: Path
) -> None:
    shard = open_shard(_config(tmp_path, max_value_bytes=56 * 1024))
    assert shard.submit(_put("k", b"x" * 1000)) == 1
    assert shard.submit(Delete("k")) == 1 and shard.submit(Delete("k")) == 0  # idempotent delete
    # The largest legal put fits one entry...
    biggest = _put("K" * 1024, b"x" * (56 * 1024), scope="s" * 512)
    assert len(encode_command(biggest)) < MAX_ENTRY_BYTES
    assert shard.submit(biggest) == 1
    before = shard.status()["commit_index"]
    with pytest.raises(LimitExceededError):
        shard.submit(_put("big", b"x" * (56 * 1024 + 1)))
    with pytest.raises(LimitExceededError):  # every key is legal, but together they exceed one entry
        shard.submit(Evict(tuple(f"{i:05d}" + "k" * 1000 for i in range(70))))
    assert shard.status()["commit_index"] == before  # nothing was logged
    assert shard.read(lambda state, now: state.get("big", now)) is None


def test_a_reopened_replica_recovers_from_snapshot_plus_journal(
    open_shard: Callable[..., ReplicatedShard], tmp_path: Path
) -> None:
    config = _config(tmp_path, compaction_entries=20)
    shard = open_shard(config)
    for i in range(60):
        shard.submit(_put(f"a{i}"))
    deadline = time.monotonic() + 20
    while shard.snapshots < 1:
        assert time.monotonic() < deadline, "no snapshot was taken"
        time.sleep(0.05)
    for i in range(5):  # after the snapshot: these live only in the journal
        shard.submit(_put(f"b{i}"))
    applied, digest = shard.digest()
    shard.close()
    assert (config.data_dir_of("r0") / "raft.snapshot").stat().st_size > 0
    reopened = open_shard(config)
    deadline = time.monotonic() + 20
    while reopened.digest()[0] < applied:
        assert time.monotonic() < deadline, "the journal was not replayed"
        time.sleep(0.05)
    assert reopened.digest() == (applied, digest)
    assert reopened.read(lambda state, now: state.get("b4", now)) is not None


def test_followers_and_members_know_the_leader_address(open_shard: Callable[..., ReplicatedShard]) -> None:
    shard = open_shard()
    assert shard.leader_rpc() == shard.members["r0"].rpc
    assert shard.status()["role"] == "leader"
    with pytest.raises(InvalidInputError):
        shard.remove_replica("r0")  # a leader cannot remove itself
    with pytest.raises(InvalidInputError):
        shard.add_replica("r0", "127.0.0.1:1", "grpc://127.0.0.1:2")  # already a member


def test_deferred_inserts_are_searchable_at_once_and_end_in_the_same_graph(
    open_shard: Callable[..., ReplicatedShard], tmp_path: Path
) -> None:
    """A replica acknowledges a put before its hnswlib insert runs; the result must not differ."""
    shard = open_shard(_config(tmp_path, index_backlog=500))
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1)[:, None]
    commands = [Put(f"k{i}", b"v%d" % i, "", vectors[i].tobytes(), 1, 0) for i in range(300)]
    commands += [Delete(f"k{i}") for i in range(0, 300, 7)]
    for command in commands:
        shard.submit(command)
        if isinstance(command, Put):  # acknowledged means findable, queued insert or not
            (match,) = shard.read(lambda state, now, c=command: state.search(
                np.frombuffer(c.vector, dtype=np.float32), "", 1, None, now))
            assert match.key == command.key
    deleted = {f"k{i}" for i in range(0, 300, 7)}
    for i in range(300):
        found = shard.read(lambda state, now, q=vectors[i]: state.search(q, "", 1, None, now))
        assert (found[0].key == f"k{i}") == (f"k{i}" not in deleted)
    deadline = time.monotonic() + 30
    while shard.read(lambda state, now: state.queued_index_ops):  # the idle applier drains the backlog
        assert time.monotonic() < deadline, "the applier never drained the index backlog"
        time.sleep(0.05)
    replica = shard.read(lambda state, now: state)
    eager = ShardState(DIM, replica.model_id, replica.settings, replica.limits)  # inserts as it applies
    for command in commands:
        eager.apply(command)
    eager.applied = replica.applied  # the only other difference: commands the shard applied for itself
    assert shard.digest()[1] == eager.digest()


def test_a_replica_refuses_to_start_on_a_damaged_journal_and_drops_a_torn_tail(
    open_shard: Callable[..., ReplicatedShard], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    shard = open_shard(config)
    for i in range(30):
        shard.submit(_put(f"k{i}"))
    applied, digest = shard.digest()
    shard.close()
    path = config.data_dir_of("r0") / JOURNAL_FILE
    intact = path.read_bytes()
    # A torn tail (a kill in the middle of an append): the replica starts, without that never-acknowledged record.
    path.write_bytes(intact + wal.encode_frame(applied + 10, b"\x00" * 200)[:40])
    reopened = open_shard(config)
    deadline = time.monotonic() + 20
    while reopened.digest()[0] < applied:
        assert time.monotonic() < deadline, "the journal was not replayed"
        time.sleep(0.05)
    assert reopened.digest() == (applied, digest)
    reopened.close()
    assert list(path.parent.glob(f"{JOURNAL_FILE}.torn-*"))
    # A flipped bit with intact records after it: refused, naming the file and the offset, nothing changed.
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x04
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptDataError) as info:
        ReplicatedShard(config, "r0")
    assert str(path) in str(info.value) and "byte " in str(info.value)
    assert path.read_bytes() == bytes(damaged)


def test_binary_values_are_measured_as_the_raft_entry_holds_them(
    open_shard: Callable[..., ReplicatedShard], tmp_path: Path
) -> None:
    """pysyncobj pickles an entry with protocol 2: every byte >= 0x80 takes two.  An entry of 64 KiB
    or more would take its broken chunked path, so such a command is refused before it is logged."""
    shard = open_shard(_config(tmp_path))
    assert shard.submit(_put("fits", b"\xff" * 29_000)) == 1
    sizes = [len(entry[0]) for entry in journal(shard)[:]]
    assert 58_000 < max(sizes) < RAFT_MESSAGE_LIMIT
    with pytest.raises(LimitExceededError):
        shard.submit(_put("too-big", b"\xff" * 40_000))  # 40 KB, 80 KB as pickled into the entry
    assert shard.read(lambda state, now: state.get("too-big", now)) is None
