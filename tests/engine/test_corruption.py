"""Damaged storage is noticed: a checksum on every log record and snapshot file, no silent truncation, a repair tool."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from semcache import CorruptDataError, SemanticKV
from semcache._cli.main import main
from semcache._engine import wal
from semcache._engine.storage import DurableLog
from semcache.embeddings import HashEmbedding

DIM = 32


def _store(path: Path, count: int) -> None:
    """``count`` puts, each its own log record (seq 1..count), and no checkpoint."""
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    for n in range(count):
        kv.put(f"k{n}", f"value number {n}")
    kv._log.close()  # a crash: no checkpoint at close  # type: ignore[union-attr]


def _record_offsets(data: bytes) -> list[int]:
    return [0] + [end for end, _, _ in wal.scan(data).records][:-1]


def _files(path: Path) -> dict[str, bytes]:
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name != "LOCK"]
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def test_a_flipped_byte_mid_log_fails_the_open_naming_file_and_offset_and_changes_nothing(tmp_path):
    path = tmp_path / "store"
    _store(path, 100)
    log = path / "wal.log"
    data = bytearray(log.read_bytes())
    tenth = _record_offsets(bytes(data))[9]
    data[tenth + 20] ^= 0x01  # one bit inside record 10 of 100
    log.write_bytes(bytes(data))
    before = _files(path)
    with pytest.raises(CorruptDataError, match=rf"wal\.log is damaged at byte {tenth} .*intact records follow"):
        SemanticKV(path, embedding=HashEmbedding(dim=DIM))
    assert _files(path) == before  # not truncated: the 90 acknowledged writes after it, and the evidence, are there


def test_repair_reports_then_salvages_every_intact_record_and_keeps_the_damaged_log(tmp_path, capsys):
    path = tmp_path / "store"
    _store(path, 100)
    log = path / "wal.log"
    data = bytearray(log.read_bytes())
    data[_record_offsets(bytes(data))[9] + 20] ^= 0x01
    log.write_bytes(bytes(data))
    damaged = bytes(data)
    assert main(["repair", "--path", str(path)]) == 1  # a report only
    out = capsys.readouterr().out
    assert "99 intact records" in out and "damaged bytes" in out and "nothing was changed" in out
    assert log.read_bytes() == damaged
    assert main(["repair", "--path", str(path), "--drop-damaged"]) == 0
    out = capsys.readouterr().out
    assert "entries after repair: 99" in out
    (aside,) = path.glob("damaged-*")
    assert (aside / "wal.log").read_bytes() == damaged  # moved aside, not deleted
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        assert kv.get("k9") is None  # the one damaged record
        assert [kv.get(f"k{n}") for n in (0, 8, 10, 99)] == [b"value number 0", b"value number 8",
                                                                b"value number 10", b"value number 99"]
        assert len(kv) == 99


def test_a_torn_tail_is_cut_off_with_a_warning_and_its_bytes_kept(tmp_path, caplog):
    path = tmp_path / "store"
    _store(path, 5)
    log = path / "wal.log"
    whole = log.read_bytes()
    log.write_bytes(whole[:-7])  # the last append was cut short
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        assert len(kv) == 4 and kv.get("k3") == b"value number 3"
    last = _record_offsets(whole)[-1]
    assert (path / f"wal.log.torn-{last}").read_bytes() == whole[last:-7]
    assert "interrupted write" in caplog.text


@pytest.mark.parametrize("name", ["entries.bin", "index-0.bin", "state.json", "manifest.json"])
def test_one_flipped_bit_in_any_snapshot_file_is_named(tmp_path, name):
    path = tmp_path / "store"
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        for n in range(50):
            kv.put(f"k{n}", f"value number {n}")
    target = path / "snapshot" / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x04
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=rf"{name}.*damaged|damaged.*{name}"):
        SemanticKV(path, embedding=HashEmbedding(dim=DIM))
    report = main(["repair", "--path", str(path)])
    assert report == 1


def test_close_releases_the_directory_lock_when_the_final_checkpoint_fails(tmp_path, monkeypatch):
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM))
    kv.put("k", "kept by the log")

    def full_disk(self, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DurableLog, "checkpoint", full_disk)
    with pytest.raises(OSError, match="No space left"):
        kv.close()
    monkeypatch.undo()
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:  # the lock was released
        assert reopened.get("k") == b"kept by the log"
