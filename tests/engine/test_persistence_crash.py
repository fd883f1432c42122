"""Persistence: a kill -9 never loses an acknowledged write, and a data directory refuses misuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from io import FileIO
from pathlib import Path

import pytest

from semcache import ConfigurationError, EmbeddingMismatchError, SemanticKV
from semcache.embeddings import HashEmbedding

REPO = Path(__file__).resolve().parents[2]
DIM = 384  # wide enough that few number tokens share a hash bucket

# Twelve words from a small vocabulary, chosen by the key: texts overlap by degrees,
# which HNSW navigates well (templated texts differing in one token are near-equidistant
# under HashEmbedding, and any approximate index then misses some exact matches).
TEXT_OF = textwrap.dedent(
    """
    import random

    def text_of(key):
        rng = random.Random(key)
        return " ".join(f"w{rng.randrange(300)}" for _ in range(12))
    """
)

WRITER = TEXT_OF + textwrap.dedent(
    """
    import sys
    from semcache import SemanticKV
    from semcache.embeddings import HashEmbedding

    path, prefix = sys.argv[1], sys.argv[2]
    checkpoint_bytes, fsync, dim = int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
    kv = SemanticKV(path, embedding=HashEmbedding(dim=dim), checkpoint_bytes=checkpoint_bytes, fsync=fsync)
    print("OPEN", flush=True)
    for i in range(1_000_000):
        key = f"{prefix}:{i}"
        kv.put(key, text_of(key))
        if i % 7 == 3:
            kv.delete(f"{prefix}:{i - 1}")
            print("DEL", f"{prefix}:{i - 1}", flush=True)
        print("ACK", key, flush=True)
    """
)


def run_and_kill(path: Path, prefix: str, acks_before_kill: int, *, checkpoint_bytes: int, fsync: bool = False):
    """Start a writer, SIGKILL it after ``acks_before_kill`` acknowledgements; return (acked, deleted)."""
    script = path.parent / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), prefix, str(checkpoint_bytes), "1" if fsync else "0", str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[str] = []
    deleted: set[str] = set()
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300  # a bound for a loaded machine, not a speed check
        while len(acked) < acks_before_kill and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            kind, key = (line.split() + [""])[:2]
            if kind == "ACK":
                acked.append(key)
            elif kind == "DEL":
                deleted.add(key)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Lines already written before the kill are acknowledgements too.
        for line in proc.stdout.read().splitlines():
            kind, key = (line.split() + [""])[:2]
            if kind == "ACK":
                acked.append(key)
            elif kind == "DEL":
                deleted.add(key)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            stderr = proc.stderr.read()
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    assert len(acked) >= acks_before_kill, f"writer stopped early: {stderr}"
    return acked, deleted


_namespace: dict[str, object] = {}
exec(TEXT_OF, _namespace)  # the very function the writer process uses
text_of = _namespace["text_of"]


def check_acknowledged(kv: SemanticKV, acked: list[str], deleted: set[str]) -> None:
    for key in acked:
        if key in deleted:
            assert kv.get(key) is None, key
        else:
            assert kv.get(key) == text_of(key).encode(), key


@pytest.mark.slow
def test_kill_9_during_writes_and_checkpoints_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "store"
    all_acked: list[str] = []
    all_deleted: set[str] = set()
    # Three crash-restart cycles on one directory; a small checkpoint size makes
    # checkpoints (snapshot swap + log truncation) happen while the writer runs.
    for cycle, acks in enumerate([40, 700, 1_500]):
        acked, deleted = run_and_kill(path, f"c{cycle}", acks, checkpoint_bytes=30_000)
        all_acked += acked
        all_deleted |= deleted
        with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
            check_acknowledged(kv, all_acked, all_deleted)
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        check_acknowledged(kv, all_acked, all_deleted)
        live = [key for key in all_acked if key not in all_deleted]
        probes = live[:: max(1, len(live) // 20)][:20]
        # HNSW is approximate: allow one miss in 20 (none seen on these texts).
        found = sum(kv.search(text_of(probe), top_k=1)[0].key == probe for probe in probes)
        assert found >= len(probes) - 1
        assert (path / "snapshot" / "state.json").exists()


@pytest.mark.slow
def test_kill_9_with_fsync_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "store"
    acked, deleted = run_and_kill(path, "f", 200, checkpoint_bytes=1 << 30, fsync=True)
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        check_acknowledged(kv, acked, deleted)


@pytest.mark.slow
def test_a_torn_log_tail_is_dropped_and_writing_continues(tmp_path):
    path = tmp_path / "store"
    acked, deleted = run_and_kill(path, "t", 100, checkpoint_bytes=1 << 30)
    wal = path / "wal.log"
    good_size = wal.stat().st_size
    with open(wal, "ab") as handle:  # half a record: a header promising more bytes than follow
        handle.write(b"\x40\x00\x00\x00\xde\xad\xbe\xef\x01\x00\x00\x00\x00\x00\x00\x00partial")
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        check_acknowledged(kv, acked, deleted)
        assert wal.stat().st_size == good_size  # the torn tail was cut off
        kv.put("after-tear", "written after recovery")
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        check_acknowledged(kv, acked, deleted)
        assert kv.get("after-tear") == b"written after recovery"


def test_a_corrupt_record_ends_replay_at_the_last_good_one(tmp_path):
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    kv.put("first", "one")
    size_after_first = (path / "wal.log").stat().st_size
    kv.put("second", "two")
    kv._log.close()  # simulate a crash: no checkpoint, the lock is dropped  # type: ignore[union-attr]
    data = bytearray((path / "wal.log").read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last record's payload: its CRC no longer matches
    (path / "wal.log").write_bytes(bytes(data))
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert reopened.get("first") == b"one"
        assert reopened.get("second") is None
        assert (path / "wal.log").stat().st_size == size_after_first


def test_a_second_process_gets_a_clear_configuration_error(tmp_path):
    path = tmp_path / "store"
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        kv.put("k", "v")
        probe = textwrap.dedent(
            f"""
            from semcache import SemanticKV, ConfigurationError
            from semcache.embeddings import HashEmbedding
            try:
                SemanticKV({str(path)!r}, embedding=HashEmbedding(dim={DIM}))
            except ConfigurationError as exc:
                print("ConfigurationError:", exc)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert out.stdout.startswith("ConfigurationError:"), out.stderr
        assert "already open in another process" in out.stdout
        with pytest.raises(ConfigurationError, match="already open"):
            SemanticKV(path, embedding=HashEmbedding(dim=DIM))  # same process, second handle
        assert kv.get("k") == b"v"
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:  # released on close
        assert kv.get("k") == b"v"


@pytest.mark.parametrize("checkpointed", [True, False], ids=["after-checkpoint", "log-only"])
@pytest.mark.parametrize("other", [HashEmbedding(dim=16), HashEmbedding(dim=DIM, seed=7)], ids=["dim", "model"])
def test_reopening_with_another_embedder_is_refused(tmp_path, checkpointed, other):
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    kv.put("k", "some text")
    if checkpointed:
        kv.close()
    else:
        kv._log.close()  # crash before any checkpoint: only the log holds the data  # type: ignore[union-attr]
    with pytest.raises(EmbeddingMismatchError, match=f"hash:{DIM}:0"):
        SemanticKV(path, embedding=other)
    # The refused open released the directory, and the data is intact.
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert reopened.get("k") == b"some text"
        assert reopened.search("some text", top_k=1)[0].key == "k"


class DiskFullFile:
    """Stands in for the log file: writes half of what it is given, then fails as a full disk does."""

    def __init__(self, real: FileIO) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def fileno(self) -> int:
        return self.real.fileno()


def test_a_failed_append_leaves_no_torn_record_before_later_writes(tmp_path):
    """Regression: a partial record (disk full) used to hide every later acknowledged write from recovery."""
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    kv.put("before", "written before the failure")
    log = kv._log
    assert log is not None
    real = log._wal
    log._wal = DiskFullFile(real)  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space left"):
        kv.put("failed", "this write fails")
    log._wal = real
    assert kv.get("failed") is None
    kv.put("after", "acknowledged after the failure")
    log.close()  # crash: no checkpoint
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert reopened.get("before") == b"written before the failure"
        assert reopened.get("after") == b"acknowledged after the failure"
        assert reopened.get("failed") is None


def test_a_failed_automatic_checkpoint_does_not_fail_the_write(tmp_path, monkeypatch):
    path = tmp_path / "store"
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1_000) as kv:
        def no_space(directory):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(kv._state, "snapshot", no_space)
        for i in range(30):  # crosses the checkpoint size several times
            assert kv.put(f"k{i}", f"value {i}")
        monkeypatch.undo()
        assert kv.stats()["wal_bytes"] > 1_000  # nothing was checkpointed, the log kept it all
        kv.put("last", "value")
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert all(reopened.get(f"k{i}") == f"value {i}".encode() for i in range(30))


def _damage_state_json(path: Path) -> None:
    (path / "snapshot" / "state.json").write_text("{not json")


def _truncate_entries(path: Path) -> None:
    entries = path / "snapshot" / "entries.bin"
    entries.write_bytes(entries.read_bytes()[:-7])


def _remove_index(path: Path) -> None:
    (path / "snapshot" / "index-0.bin").unlink()


def _truncate_index(path: Path) -> None:
    index = path / "snapshot" / "index-0.bin"
    index.write_bytes(index.read_bytes()[:100])


def _bad_settings(path: Path) -> None:
    header = path / "snapshot" / "state.json"
    header.write_text(header.read_text().replace('"hnsw_m": 16', '"hnsw_m": -3'))


def _unknown_format(path: Path) -> None:
    from semcache._engine.snapshot import SNAPSHOT_FORMAT, write_manifest

    header = path / "snapshot" / "state.json"
    header.write_text(header.read_text().replace(f'"format": {SNAPSHOT_FORMAT}', '"format": 99'))
    write_manifest(path / "snapshot")  # a consistent manifest: only the format is wrong


def _damage_stamp(path: Path) -> None:
    (path / "embedding.json").write_text("[")


@pytest.mark.parametrize(
    "damage",
    [
        _damage_state_json,
        _truncate_entries,
        _remove_index,
        _truncate_index,
        _bad_settings,
        _unknown_format,
        _damage_stamp,
    ],
)
def test_damaged_data_is_a_clear_corrupt_data_error(tmp_path, damage):
    from semcache import CorruptDataError

    path = tmp_path / "store"
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as kv:
        kv.put("k", "some text")
        kv.put("other", "more text")
    damage(path)
    with pytest.raises(CorruptDataError, match="damaged|unreadable|truncated|unknown snapshot format"):
        SemanticKV(path, embedding=HashEmbedding(dim=DIM))
    # The refused open released the directory lock.
    with pytest.raises(CorruptDataError):
        SemanticKV(path, embedding=HashEmbedding(dim=DIM))


def test_a_log_record_from_an_unknown_codec_is_a_corrupt_data_error(tmp_path):
    import struct
    import zlib

    from semcache import CorruptDataError

    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    kv.put("k", "v")
    kv._log.close()  # crash  # type: ignore[union-attr]
    payload = bytes([99, 1]) + b"from a future version"
    head = struct.pack("<IIQ", len(payload), 0, 2)
    record = struct.pack("<IIQ", len(payload), zlib.crc32(head[8:] + payload), 2) + payload
    with open(path / "wal.log", "ab") as wal:
        wal.write(record)
    with pytest.raises(CorruptDataError, match="record 2 .* cannot be decoded: unknown command codec version 99"):
        SemanticKV(path, embedding=HashEmbedding(dim=DIM))


def test_a_crash_between_the_checkpoint_renames_recovers_the_old_snapshot_and_log(tmp_path):
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    kv.put("a", "in the snapshot")
    kv.checkpoint()
    kv.put("b", "only in the log")
    expected = kv.digest()
    kv._log.close()  # crash  # type: ignore[union-attr]
    # The state a checkpoint leaves between its renames: old moved aside, new complete but not in place.
    (path / "snapshot").rename(path / "snapshot.old")
    (path / "snapshot.new").mkdir()
    (path / "snapshot.new" / "state.json").write_text("{}")
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert reopened.get("a") == b"in the snapshot" and reopened.get("b") == b"only in the log"
        assert reopened.digest() == expected
    assert not (path / "snapshot.old").exists() and not (path / "snapshot.new").exists()


def test_a_crash_after_the_snapshot_swap_does_not_apply_logged_commands_twice(tmp_path):
    path = tmp_path / "store"
    kv = SemanticKV(path, embedding=HashEmbedding(dim=DIM), checkpoint_bytes=1 << 30)
    for i in range(5):
        kv.put(f"k{i}", f"value {i}")
    kv.delete("k0")
    wal = (path / "wal.log").read_bytes()
    kv.checkpoint()  # snapshot now holds all six commands; the log was restarted
    expected = kv.digest()
    kv._log.close()  # crash  # type: ignore[union-attr]
    (path / "wal.log").write_bytes(wal)  # as if the crash came before the log was restarted
    with SemanticKV(path, embedding=HashEmbedding(dim=DIM)) as reopened:
        assert reopened.digest() == expected
        assert reopened.stats()["applied"] == 6 and reopened.get("k0") is None
