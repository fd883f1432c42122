"""The ``semcache`` command line: demo (real model, as a subprocess), stats, bench and usage errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from semcache import SemanticKV, __version__
from semcache._cli.main import main

DEMO_TIMEOUT = 600  # seconds; a bound on a stuck run, not a speed assert


def _row(output: str, query: str) -> str:
    """The demo table's line for ``query``."""
    lines = [line for line in output.splitlines() if line.startswith(query)]
    assert len(lines) == 1, f"no single row for {query!r} in:\n{output}"
    return lines[0]


@pytest.mark.model
@pytest.mark.slow
def test_demo_shows_paraphrase_hits_and_hard_negative_misses() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "semcache", "demo", "--rounds", "5"],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "verifier, score >= " in out.splitlines()[0]
    for paraphrase in ("How can I enable dark mode?", "what's the capital of japan",
                       "What health benefits does green tea have?"):
        assert _row(out, paraphrase).endswith(" HIT"), paraphrase
    assert _row(out, "How do I reset my password?").endswith("HIT (exact)")
    # Hard negatives, the verifier's verdict shown per row; the embedding alone scores some above 0.95.
    for negative in ("How do I disable dark mode?", "How do I read a file in Rust?", "Is it not safe to eat raw eggs?",
                     "What was the GDP of France in 2020?", "How do I sort a list in Python in descendin"):
        assert re.search(r"miss \(verifier 0\.\d\d < 0\.\d\d\)$", _row(out, negative)), negative
    assert float(_row(out, "Is it not safe to eat raw eggs?").split()[-7]) > 0.95  # the cosine alone would serve it
    for name in ("bare embedding", "semantic hit", "exact hit"):
        assert re.search(rf"{name}.* ms .*x embedding", out), out


@pytest.fixture
def store(tmp_path: Path, hash_embedding) -> Path:
    path = tmp_path / "store"
    with SemanticKV(path, embedding=hash_embedding) as kv:
        kv.put("a", "alpha", scope="tenant-1")
        kv.put("b", "beta", scope="tenant-2")
        kv.put("c", b"\xff\xfe not UTF-8, not searchable", scope="tenant-1")
    return path


def test_stats_prints_entries_scopes_model_and_sizes(store: Path, capsys) -> None:
    assert main(["stats", "--path", str(store)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^entries\s+3 \(2 searchable\)$", out, re.M), out
    assert re.search(r"^scopes\s+2$", out, re.M), out
    assert re.search(r"^model\s+hash:64:0 \(dim 64\)$", out, re.M), out
    assert re.search(r"^value bytes\s+37$", out, re.M), out
    disk = int(re.search(r"^disk bytes\s+([\d,]+)", out, re.M).group(1).replace(",", ""))
    assert disk > 0


def test_stats_json_and_store_left_intact(store: Path, capsys, hash_embedding) -> None:
    assert main(["stats", "--path", str(store), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["entries"], stats["scopes"], stats["model_id"]) == (3, 2, "hash:64:0")
    with SemanticKV(store, embedding=hash_embedding) as kv:  # stats never embedded or dropped anything
        assert kv.get("a") == b"alpha" and kv.get("c") == b"\xff\xfe not UTF-8, not searchable"
        assert [r.key for r in kv.search("alpha", scope="tenant-1")] == ["a"]


def test_stats_on_a_folder_that_is_not_a_store_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["stats", "--path", str(tmp_path)]) == 1
    assert "not a semcache data directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was created there


def test_stats_refuses_a_store_open_elsewhere(store: Path, capsys, hash_embedding) -> None:
    with SemanticKV(store, embedding=hash_embedding):
        assert main(["stats", "--path", str(store)]) == 1
    assert "already open" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.slow
def test_bench_quick_prints_every_table(minilm, capsys) -> None:
    # In-process, so the session's model is reused; --quick keeps it to a few seconds.
    assert main(["bench", "--embedded", "--sizes", "300", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "| operation | median ms | p90 ms | p99 ms | max ms | CPU median ms | CPU p99 ms |" in out
    assert re.search(r"\| semantic lookup \(embed \+ search \+ guard\) \|.*x.*\| <= 1\.10x: (met|MISSED) \|", out)
    for label in ("unrelated query", "paraphrase query"):
        assert f"| 300 entries, {label}" in out and f"| 1 entries, {label}" in out
    assert re.search(r"\| 300 entries, paraphrase query \(own entry first: \d+\.\d%\) \|", out)
    assert re.search(r"memory per entry \(300 entries, RSS growth\)", out)
    assert "hnswlib 0.8" in out and "torch" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--sizes", "ten"], "bad sizes"),
        (["bench", "--sizes", "0"], "sizes must be positive"),
        # Refused before the model loads (that would take seconds), as usage errors, not tracebacks:
        (["demo", "--rounds", "0"], "must be an int >= 1, got '0'"),
        (["demo", "--threshold", "2"], "must be a number in [0, 1], got '2'"),
        (["bench", "--rounds", "-3"], "must be an int >= 1"),
        (["calibrate", "--thresholds", "0.7:x:0.1"], "bad thresholds"),
        (["stats"], "--path"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help_and_version_prints_version(capsys) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"semcache {__version__}"


def test_calibrate_with_missing_data_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["calibrate", "--data", str(tmp_path), "--datasets", "gptcache"]) == 1
    assert "not found" in capsys.readouterr().err
