"""``semcache eval``: every pair format is read, the pairs go through the real cache, the counts are right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcache import InvalidInputError, SemanticCache, SemanticKV
from semcache._cli.main import main
from semcache._quality.evaluate import count, evaluate, run, write_json, write_plot
from semcache._quality.pairs import detect_format, read_pairs
from semcache.embeddings import HashEmbedding


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "gptcache": _write(tmp_path / "mock.json", json.dumps([{"origin": "a b c", "similar": "a b c d"}])),
        "csv": _write(tmp_path / "qqp.csv", "question1,question2,is_duplicate\nx y,x y z,1\np q,r s,0\n"),
        "paws": _write(tmp_path / "paws.tsv", "7\tone two\ttwo one\t0\n8\tthree four\tthree four five\t1\n"),
        "mrpc": _write(tmp_path / "mrpc.txt", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                             "1\t11\t12\tthe cat sat\tthe cat sat down\n"),
        "jsonl": _write(tmp_path / "mine.jsonl", json.dumps({"first": "f g", "second": "f g h", "label": 1,
                                                             "split": "test"}) + "\n"),
    }


def test_every_format_is_read_and_detected(files):
    assert {fmt: detect_format(path) for fmt, path in files.items()} == {fmt: fmt for fmt in files}
    assert [(p.first, p.second, p.positive) for p in read_pairs(files["csv"])] == [("x y", "x y z", True),
                                                                                  ("p q", "r s", False)]
    assert read_pairs(files["paws"])[0].id == "7" and read_pairs(files["mrpc"])[0].first == "the cat sat"
    assert read_pairs(files["gptcache"])[0].positive and read_pairs(files["jsonl"])[0].split == "test"


def test_bad_pair_files_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="line 2: not a labelled pair"):
        read_pairs(_write(tmp_path / "bad.jsonl", '{"first": "a", "second": "b", "label": 1}\n{"first": 3}\n'))
    with pytest.raises(InvalidInputError, match="holds no labelled pair"):
        read_pairs(_write(tmp_path / "empty.jsonl", "\n"))
    with pytest.raises(InvalidInputError, match="unknown pairs format 'xml'"):
        read_pairs(_write(tmp_path / "x.jsonl", "{}"), "xml")
    with pytest.raises(InvalidInputError, match="is not a file"):
        read_pairs(tmp_path / "missing.csv")


def test_pairs_run_through_the_cache_and_are_counted_as_the_data_readme_says(tmp_path):
    pairs = read_pairs(_write(tmp_path / "p.jsonl", "\n".join(json.dumps(row) for row in [
        {"id": "1", "first": "alpha beta gamma delta", "second": "alpha beta gamma delta", "label": 1},  # exact, right
        {"id": "2", "first": "red green blue yellow", "second": "red green blue yellow pink", "label": 1},  # near
        {"id": "3", "first": "kiwi mango pear plum", "second": "kiwi mango pear plum fig", "label": 0},  # near, wrong
        {"id": "4", "first": "sun moon star sky", "second": "cat dog fish bird", "label": 1},  # far: a miss (its own
        # entry is still the nearest, so serving it would have been right)
    ])))
    backend = SemanticKV(embedding=HashEmbedding(dim=256), purge_interval=3600)
    with SemanticCache(backend, threshold=0.8) as cache:
        rows = run(pairs, cache)
        assert len(backend) == 0  # the run's scope was removed
        result = evaluate("p", rows, cache)
    assert [(r.exact, r.served, r.right) for r in rows] == [(True, True, True), (False, True, True),
                                                           (False, True, False), (False, False, True)]
    assert (result.default.right, result.default.wrong, result.default.misses) == (2, 1, 1)
    strict = count(rows, lambda row: row.similarity is not None and row.similarity >= 0.99)
    assert (strict.right, strict.wrong) == (1, 0)  # only the exact hit is served at 0.99
    write_json(result, tmp_path / "p.json")
    write_plot(result, tmp_path / "p.png")
    assert json.loads((tmp_path / "p.json").read_text())["default"]["wrong"] == 1
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_the_eval_command_prints_the_table_and_writes_json_and_the_plot(tmp_path, capsys):
    pairs = _write(tmp_path / "few.jsonl", "\n".join(json.dumps(row) for row in [
        {"first": "What is the capital of Japan?", "second": "what's the capital of japan", "label": 1},
        {"first": "How do I enable dark mode?", "second": "How do I disable dark mode?", "label": 0},
    ]))
    assert main(["eval", "--pairs", str(pairs), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| balanced (<= 1.0% wrong) | 1 | 0 | 1 |" in out
    assert (tmp_path / "out" / "few.json").is_file() and (tmp_path / "out" / "few.png").is_file()
