"""The GPTCache comparison's own parts: reading a set as a cache, counting, matching operating points.

None of these needs GPTCache; the last test runs the whole script on 30 pairs when it is installed
(the ``bench-gptcache`` extra) and the shared data is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import vs_gptcache as bench
from semcache import SemanticCache, SemanticKV
from semcache._cli.latency import Summary, Timing
from semcache._quality.evaluate import Count, Evaluation, run
from semcache._quality.pairs import Pair
from semcache.embeddings import HashEmbedding

ROOT = Path(__file__).resolve().parents[2]


def pair(pair_id: str, first: str, second: str, positive: bool = True, split: str = "test") -> Pair:
    return Pair(pair_id, first, second, positive, split)


PAIRS = (
    pair("a", "How do I reverse a list?", "how to reverse a list"),
    pair("b", "How do I reverse a  list? ", "reverse a list in place"),  # the same first text, respelled
    pair("c", "What is the capital of France?", "What's the capital of Spain?", positive=False),
    pair("d", "How do I sort a dict?", "sort a dictionary by value"),
)


def test_a_set_is_stored_once_per_distinct_first_text_with_the_ids_of_its_pairs():
    entries = bench.cache_entries(PAIRS)
    assert entries == [("How do I reverse a  list? ", ["a", "b"]), ("What is the capital of France?", ["c"]),
                       ("How do I sort a dict?", ["d"])]
    assert bench.decode_answer(bench.encode_answer(["a", "b"])) == ["a", "b"]
    assert bench.decode_answer(None) is None


def test_both_systems_store_the_same_entries():
    cache = SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64)), threshold=0.9)
    stored = []
    store_many = cache.store_many
    cache.store_many = lambda items, **kwargs: stored.extend(items) or store_many(items, **kwargs)  # type: ignore[method-assign]
    run(PAIRS, cache)
    assert [(text, list(ids)) for text, ids in stored] == bench.cache_entries(PAIRS)


def test_each_lookup_is_read_the_data_readme_way():
    assert bench.outcome(PAIRS[0], ["a", "b"]) == "right"  # its own id among the entry's
    assert bench.outcome(PAIRS[0], ["d"]) == "wrong"  # another pair's answer
    assert bench.outcome(PAIRS[2], ["c"]) == "wrong"  # its own entry, but not a duplicate
    assert bench.outcome(PAIRS[2], None) == "miss"
    counted = bench.tally("p", PAIRS, [["a", "b"], ["d"], None, ["d"]])
    assert (counted.queries, counted.positives, counted.right, counted.wrong, counted.misses) == (4, 3, 2, 1, 1)


def test_gptcache_thresholds_are_cosines_through_its_search_distance_evaluation():
    assert bench.cosine_of(0.8) == pytest.approx(0.6) and bench.cosine_of(0.95) == pytest.approx(0.9)
    assert bench.GRID[0] == 0.7 and bench.GRID[-1] == 1.0 and bench.GPTCACHE_DEFAULT in bench.GRID
    assert bench.gptcache_point(0.955) == "threshold 0.955 (cosine >= 0.910)"
    assert 0.973 in bench.GRID  # fine enough to find GPTCache's best threshold near the top


def test_the_curve_serves_a_lookup_from_the_threshold_its_score_reaches():
    served = [bench.Served(["a", "b"], 0.97), bench.Served(["d"], 0.9), bench.Served(["c"], 0.85),
              bench.Served(["d"], 0.99)]
    curve = bench.curve_from(PAIRS, served, [0.8, 0.9, 0.95, 0.98, 1.0])
    assert [(c.right, c.wrong) for c in curve] == [(2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    assert curve[1].point == bench.gptcache_point(0.9)


def counts(*right_wrong: tuple[int, int], prefix: str = "t") -> list[Count]:
    return [Count(f"{prefix}{n}", 100, 80, right, wrong) for n, (right, wrong) in enumerate(right_wrong)]


def test_the_match_is_the_most_right_hits_at_no_more_wrong_hits():
    curve = counts((80, 9), (70, 4), (70, 3), (60, 3), (50, 0), (50, 0))
    assert bench.best_within(curve, 5).point == "t2"  # 70 right: the one with fewer wrong hits
    assert bench.best_within(curve, 3).point == "t2"
    assert bench.best_within(curve, 0).point == "t5"  # a tie: the stricter setting
    assert bench.best_within(curve, 100).point == "t0"
    assert bench.best_within(counts((10, 2)), 1) is None


def evaluation(points: list[Count], verifier: list[Count]) -> Evaluation:
    return Evaluation("toy", "model", points, [], verifier, points[1])


def gptcache_curve(*right_wrong: tuple[int, int]) -> list[Count]:
    """A GPTCache curve from threshold 0.780 up by 0.01 (the default 0.8 is the third point)."""
    return [Count(bench.gptcache_point(round(0.78 + 0.01 * n, 3)), 100, 80, right, wrong)
            for n, (right, wrong) in enumerate(right_wrong)]


def test_each_operating_point_stands_beside_its_match():
    points = [Count("strict (<= 0.3% wrong)", 100, 80, 50, 0), Count("balanced (<= 1.0% wrong)", 100, 80, 60, 1),
              Count("loose (<= 3.0% wrong)", 100, 80, 70, 3)]
    verifier = counts((80, 30), (75, 12), (72, 9), prefix="verifier score ")
    # Thresholds 0.78, 0.79, 0.80 (the default, with 10 wrong hits), then stricter ones.
    gptcache = gptcache_curve((80, 40), (80, 40), (78, 10), (65, 3), (55, 1), (40, 0))
    rows = bench.matched_rows("toy", evaluation(points, verifier), gptcache)
    text = "\n".join(row.markdown() for row in rows)
    assert rows[0].count is points[0] and rows[1].count is gptcache[-1]
    assert f"| toy | GPTCache | {bench.gptcache_point(0.82)}, matched to balanced | 55 | 1 | 44 | 68.8% | 1.00% |" \
        in text
    assert f"| toy | GPTCache | {bench.gptcache_point(0.8)}, its default | 78 | 10 | 12 |" in text
    assert "| toy | semcache | verifier verifier score 2, matched to GPTCache's default | 72 | 9 |" in text
    assert bench.shown_thresholds(rows) == [0.8, 0.81, 0.82, 0.83]
    assert bench.balanced_match(evaluation(points, verifier), gptcache) == 0.82
    lenient = gptcache_curve(*[(80, 40)] * 3)
    nothing = bench.matched_rows("toy", evaluation(points, verifier), lenient)
    assert nothing[1].count is None and nothing[1].markdown().endswith("| - | - | - | - | - |")
    assert bench.balanced_match(evaluation(points, verifier), lenient) == 1.0


def test_sets_are_read_from_their_files_and_split(tmp_path):
    mock = [{"origin": f"question {n}", "similar": f"the question {n}"} for n in range(40)]
    (tmp_path / "gptcache_mock_data.json").write_text(json.dumps(mock))
    llm = tmp_path / "llm.jsonl"
    llm.write_text("\n".join(json.dumps({"id": f"g{n}", "first": "f", "second": "s", "label": n % 2, "kind": "k",
                                         "domain": "d", "group": "g", "split": "test" if n < 3 else "train"})
                             for n in range(5)))
    test_mock = bench.read_set("gptcache", tmp_path, llm)
    assert 0 < len(test_mock) < 40 and {p.split for p in test_mock} == {"test"}
    assert len(bench.read_set("gptcache", tmp_path, llm, split=None)) == 40
    assert [p.id for p in bench.read_set("llm", tmp_path, llm)] == ["g0", "g1", "g2"]


def test_latency_rounds_interleave_every_contender_in_a_rotating_order():
    calls = []
    contenders = {name: (lambda text, name=name: calls.append((name, text))) for name in ("x", "y", "z")}
    timings = bench.measure_latency(["q0", "q1", "q2", "q3"], contenders, warmup=1)
    assert calls[:3] == [("x", "q0"), ("y", "q0"), ("z", "q0")]  # the untimed warm-up
    assert [name for name, _ in calls[3:]] == ["x", "y", "z", "y", "z", "x", "z", "x", "y", "x", "y", "z"]
    assert {name: timing.wall.count for name, timing in timings.items()} == {"x": 4, "y": 4, "z": 4}


def test_the_latency_table_gives_ratios_to_the_embedding_and_to_gptcache():
    def timing(p50: float, p99: float) -> Timing:
        return Timing(Summary(10, p50, p99, p99, p99), Summary(10, p50 / 2, p99, p99, p99))

    table = bench.format_latency("toy", {
        "bare embedding (model call)": timing(0.010, 0.020), "semcache lookup": timing(0.011, 0.030),
        "GPTCache get, default Config": timing(0.022, 0.060), "GPTCache get, disable_report=True": timing(0.011, 0.015),
    }, 0.95)
    assert "| semcache lookup | 11.00 | 30.00 | 5.50 | 1.10x |" in table
    assert "semcache / GPTCache get, default Config: p50 0.50x, p99 0.50x" in table
    assert "semcache / GPTCache get, disable_report=True: p50 1.00x, p99 2.00x" in table
    assert "GPTCache at threshold 0.950 (cosine >= 0.900), semcache balanced; load average not taken" in table


def test_the_report_names_its_command_without_where_it_was_written():
    assert bench.shown_command(["--limit", "30", "--out", "x.txt", "--whole-file"]) == \
        "python benchmarks/vs_gptcache.py --limit 30 --whole-file"
    assert bench.shown_command(["--out=x.txt"]) == "python benchmarks/vs_gptcache.py"


def test_without_gptcache_the_script_says_what_to_install_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--limit", "3"])
    assert stopped.value.code == 2
    assert "pip install 'semcache-llm[bench-gptcache]'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.model
def test_the_script_runs_both_systems_on_30_pairs(tmp_path):
    # The test extra installs bench-gptcache, and the shared data lies beside the checkout: both must be there.
    data = Path(os.environ["SEMCACHE_DATA"])
    assert (data / "gptcache_mock_data.json").is_file(), f"the shared data is not at {data}"
    out = tmp_path / "out.txt"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_gptcache.py"), "--limit", "30",
                           "--latency", "10", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "SEMCACHE_DATA": str(data)})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text == done.stdout and bench.QUALITY_HEADER in text
    assert text.startswith("Run: `python benchmarks/vs_gptcache.py --limit 30 --latency 10`")
    assert not any(line.startswith("#") for line in text.splitlines())  # included in a docs page: no headings
    for name in bench.SETS.values():
        assert f"| {name} | semcache | balanced (<= 1.0% wrong) |" in text
        assert f"| {name} | GPTCache | " in text and f"Latency on {name}" in text
    assert "semcache / GPTCache get, default Config: p50 " in text
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr  # GPTCache's exit hook flushed cleanly
    assert list(tmp_path.iterdir()) == [out]  # GPTCache wrote nothing into the working directory
