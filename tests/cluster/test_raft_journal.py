"""The replica's Raft journal: checksummed, verified at start, torn tails cut, damage refused, pysyncobj's upgraded.

The file-level tests use :class:`RaftJournal` directly; the replica tests open a
real one-replica shard (its own majority) on the journal; the last test runs a
3-replica shard of node processes through kill -9 and restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal
from support.harness import ClusterHarness, wait_until

from semcache.cluster._raft.journal import HEADER_SIZE, JOURNAL_FILE, LEGACY_JOURNAL_FILE, META_FILE, RaftJournal
from semcache.errors import CorruptDataError


def command(index: int) -> bytes:
    return b"\x00" + f"command {index} ".encode() * 40


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / JOURNAL_FILE


def fill(path: Path, count: int = 20) -> list[tuple[bytes, int, int]]:
    journal = RaftJournal(path)
    for index in range(1, count + 1):
        journal.add(command(index), index, 1 + index // 10)
    written = list(journal[:])
    journal._destroy()
    return written


def record_offsets(path: Path) -> list[int]:
    """Where each record starts (the records hold ``len(command(i))`` + 8 bytes of payload)."""
    offsets, position = [], HEADER_SIZE
    journal = RaftJournal(path)
    for end in journal._ends:
        offsets.append(position)
        position = end
    journal._destroy()
    return offsets


# ------------------------------------------------------------- the file
def test_entries_terms_and_votes_survive_a_reopen(journal_path: Path) -> None:
    written = fill(journal_path)
    journal = RaftJournal(journal_path)
    assert journal[:] == written and len(journal) == 20 and journal[-1] == written[-1]
    journal.setCurrentTerm(7, "127.0.0.1:9")
    journal.setRaftCommitIndex(15)
    journal.deleteEntriesFrom(18)  # a conflict: entries 19 and 20 go
    journal.add(b"\x00replacement", 19, 7)
    journal._destroy()
    reopened = RaftJournal(journal_path)
    assert [entry[1] for entry in reopened[:]] == list(range(1, 20)) and reopened[-1] == (b"\x00replacement", 19, 7)
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId(), reopened.getRaftCommitIndex()) == (
        7, "127.0.0.1:9", 15)
    reopened.deleteEntriesTo(10)  # a snapshot covers 1-10
    reopened._destroy()
    compacted = RaftJournal(journal_path)
    assert [entry[1] for entry in compacted[:]] == list(range(11, 20))
    compacted.clear()
    compacted.add(b"\x01", 40, 8)  # a snapshot installed from the leader
    compacted._destroy()
    assert RaftJournal(journal_path)[:] == [(b"\x01", 40, 8)]


def test_a_flipped_bit_mid_journal_refuses_to_start_naming_the_file_and_offset(journal_path: Path) -> None:
    fill(journal_path)
    offsets = record_offsets(journal_path)
    data = bytearray(journal_path.read_bytes())
    data[offsets[7] + 30] ^= 0x01  # inside record 8: records 9-20 are intact after it
    journal_path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as info:
        RaftJournal(journal_path)
    assert str(journal_path) in str(info.value) and f"byte {offsets[7]}" in str(info.value)
    assert journal_path.read_bytes() == bytes(data)  # nothing changed on disk


def test_a_damaged_first_record_of_a_compacted_journal_is_damage_not_a_tail(journal_path: Path) -> None:
    fill(journal_path)
    journal = RaftJournal(journal_path)
    journal.deleteEntriesTo(12)  # the journal now starts at entry 13
    journal._destroy()
    data = bytearray(journal_path.read_bytes())
    data[HEADER_SIZE + 20] ^= 0x40
    journal_path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=f"byte {HEADER_SIZE}"):
        RaftJournal(journal_path)


def test_a_cut_tail_is_dropped_with_a_warning_and_kept_beside(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = fill(journal_path)
    offsets = record_offsets(journal_path)
    data = journal_path.read_bytes()
    journal_path.write_bytes(data[:-25])  # a kill in the middle of appending entry 20
    with caplog.at_level(logging.WARNING, logger="semcache.cluster._raft.journal"):
        journal = RaftJournal(journal_path)
    assert journal[:] == written[:-1]
    assert any("interrupted write" in r.getMessage() for r in caplog.records)
    kept = journal_path.with_name(f"{JOURNAL_FILE}.torn-{offsets[-1]}")
    assert kept.read_bytes() == data[offsets[-1] : -25]
    journal.add(command(20), 20, 3)  # and it appends after the last intact record
    journal._destroy()
    assert len(RaftJournal(journal_path)) == 20


def test_a_damaged_header_or_meta_file_refuses_to_start(journal_path: Path) -> None:
    fill(journal_path)
    data = bytearray(journal_path.read_bytes())
    data[3] ^= 0x01
    journal_path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="byte 0"):
        RaftJournal(journal_path)
    data[3] ^= 0x01
    journal_path.write_bytes(bytes(data))
    (journal_path.parent / META_FILE).write_text('{"term": 3, "voted_fo')
    with pytest.raises(CorruptDataError, match=META_FILE):
        RaftJournal(journal_path)


def test_a_pysyncobj_journal_is_upgraded_once(tmp_path: Path) -> None:
    legacy = FileJournal(str(tmp_path / LEGACY_JOURNAL_FILE))
    for index in range(1, 8):
        legacy.add(command(index), index, 2)
    legacy.setCurrentTerm(4, "127.0.0.1:5")
    legacy.setRaftCommitIndex(6)
    legacy.onOneSecondTimer()
    legacy._destroy()
    journal = RaftJournal(tmp_path / JOURNAL_FILE)
    assert journal[:] == [(command(i), i, 2) for i in range(1, 8)]
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId(), journal.getRaftCommitIndex()) == (
        4, "127.0.0.1:5", 6)
    journal._destroy()
    assert not (tmp_path / LEGACY_JOURNAL_FILE).exists()
    assert (tmp_path / f"{LEGACY_JOURNAL_FILE}.upgraded").exists()


def test_a_damaged_pysyncobj_journal_is_refused_not_upgraded(tmp_path: Path) -> None:
    legacy = FileJournal(str(tmp_path / LEGACY_JOURNAL_FILE))
    for index in range(1, 8):
        legacy.add(command(index), index, 2)
    legacy._destroy()
    data = bytearray((tmp_path / LEGACY_JOURNAL_FILE).read_bytes())
    data[40 + 3] ^= 0x10  # the first record's size
    (tmp_path / LEGACY_JOURNAL_FILE).write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="byte 40"):
        RaftJournal(tmp_path / JOURNAL_FILE)
    assert not (tmp_path / JOURNAL_FILE).exists()


# ---------------------------------------------------- a real 3-replica shard
@pytest.fixture
def shard_1x3(tmp_path: Path) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path, shards=1, replicas=3, compaction_entries=60) as cluster:
        yield cluster


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_three_replica_shard_keeps_its_data_across_kills_and_restarts(shard_1x3: ClusterHarness) -> None:
    cluster = shard_1x3
    kv = cluster.client(embedding=None, connection_timeout=1.0, request_timeout=30.0)
    written: dict[str, bytes] = {}

    def write(prefix: str, count: int) -> None:
        for i in range(count):
            written[f"{prefix}:{i}"] = f"{prefix} value {i}".encode()
            kv.put(f"{prefix}:{i}", written[f"{prefix}:{i}"])

    write("first", 40)
    follower = cluster.followers_of("shard-0")[0]
    cluster.kill9(follower)
    write("without-follower", 80)  # past compaction: the returning follower needs a snapshot or the log
    cluster.restart(follower)
    cluster.converge("shard-0")
    leader = cluster.leader_of("shard-0")
    cluster.kill9(leader)
    write("new-leader", 30)
    cluster.restart(leader)
    cluster.converge("shard-0")
    for replica_id in cluster.replicas("shard-0"):  # every replica stopped at once, then started again
        cluster.kill9(replica_id)
    for replica_id in cluster.replicas("shard-0"):
        cluster.restart(replica_id)
    cluster.leader_of("shard-0", timeout=60)
    write("after", 10)
    digest = cluster.converge("shard-0")
    for key, value in written.items():
        assert wait_until(lambda k=key: kv.get(k), 30) == value, key
    for replica_id in cluster.replicas("shard-0"):
        data_dir = cluster.local.config().data_dir_of(replica_id)
        assert (data_dir / JOURNAL_FILE).stat().st_size > HEADER_SIZE
        assert not (data_dir / LEGACY_JOURNAL_FILE).exists()
    print(f"\n[journal] {len(written)} writes kept across kills and restarts; digest {digest[:12]}")
