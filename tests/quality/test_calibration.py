"""Threshold calibration: the lookup simulation on a synthetic dataset, the loaders, and the default on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semcache import SemanticCache, SemanticKV
from semcache._cache.cache import DEFAULT_THRESHOLD
from semcache._quality.calibrate import (
    Dataset,
    Pair,
    calibrate,
    choose_threshold,
    default_data_dir,
    format_report,
    load_datasets,
    load_gptcache,
    nearest,
    prepare,
    rates,
    served,
    sweep,
)
from semcache.embeddings import CallableEmbedding
from semcache.errors import InvalidInputError


def _unit(angle_degrees: float) -> list[float]:
    """A 2-D unit vector; the cosine of two of them is the cosine of their angle difference."""
    radians = np.radians(angle_degrees)
    return [float(np.cos(radians)), float(np.sin(radians))]


# Each text sits at an angle, so every similarity is known in advance.
ANGLES = {
    "enable dark mode": 0,
    "turn on dark mode": 10,  # pair 0's query: nearer to pair 4's prompt (cos 8° = 0.990) than its own (0.985)
    "reset password": 90,
    "reset my password": 95,  # cos 5° = 0.996: paraphrase (pair 1)
    "open the file": 180,
    "close the file": 185,  # cos 5° = 0.996, but an antonym: a hard negative (pair 2)
    "weather today": 270,
    "weather tomorrow": 300,  # cos 30° = 0.866: non-duplicate (pair 3)
    "Enable dark mode": 2,  # pair 4's prompt (normalisation keeps case, so a separate entry)
    "enable  dark mode": 0,  # pair 5's query normalises to pair 0's prompt: the exact path
}
EMBEDDING = CallableEmbedding(lambda texts: np.array([_unit(ANGLES[t]) for t in texts]), dim=2, model_id="angles")
TOY = Dataset(
    "toy",
    (
        Pair(0, "enable dark mode", "turn on dark mode", True),
        Pair(1, "reset password", "reset my password", True),
        Pair(2, "open the file", "close the file", False),
        Pair(3, "weather today", "weather tomorrow", False),
        Pair(4, "Enable dark mode", "turn on dark mode", True),
        Pair(5, "reset password", "enable  dark mode", False),
    ),
)


@pytest.fixture(scope="module")
def toy():
    return prepare(TOY, EMBEDDING)


def test_cached_prompts_are_deduplicated_by_normalised_text(toy) -> None:
    assert toy.entries == ["enable dark mode", "reset password", "open the file", "weather today", "Enable dark mode"]
    assert toy.answers[1] == frozenset({1, 5})  # pairs 1 and 5 cache the same prompt
    assert toy.exact.tolist() == [-1, -1, -1, -1, -1, 0]


def test_nearest_is_exact_and_ordered() -> None:
    entries = np.array([_unit(0), _unit(90), _unit(45)], dtype=np.float32)
    queries = np.array([_unit(40), _unit(100)], dtype=np.float32)
    indices, sims = nearest(entries, queries, k=2, chunk=1)
    assert indices.tolist() == [[2, 0], [1, 2]]
    assert np.allclose(
        sims, [[np.cos(np.radians(5)), np.cos(np.radians(40))], [np.cos(np.radians(10)), np.cos(np.radians(55))]]
    )


def test_served_follows_lookup_exact_then_threshold_then_guard(toy) -> None:
    assert served(toy, 0.9).tolist() == [4, 1, -1, -1, 4, 0]
    assert served(toy, 0.9, use_guard=False).tolist() == [4, 1, 2, -1, 4, 0]  # only the guard stops pair 2
    assert served(toy, 0.8).tolist() == [4, 1, -1, 3, 4, 0]


def test_rates_count_right_wrong_and_misses(toy) -> None:
    at_90 = rates(toy, 0.9)
    # Right: pairs 1 and 4.  Wrong: pair 0 (served pair 4's answer) and pair 5 (exact hit on a non-duplicate).
    assert (at_90.queries, at_90.positives, at_90.right, at_90.wrong, at_90.misses) == (6, 3, 2, 2, 2)
    assert (at_90.right_rate, at_90.wrong_rate) == (2 / 3, 2 / 6)
    assert rates(toy, 0.9, use_guard=False).wrong == 3
    assert (rates(toy, 0.8).wrong, rates(toy, 0.8, use_guard=False).wrong) == (3, 4)


def test_sweep_and_choose_threshold(toy) -> None:
    table = sweep(toy, [0.8, 0.9, 0.995])
    assert [(row.threshold, row.right, row.wrong) for row in table] == [(0.8, 2, 3), (0.9, 2, 2), (0.995, 1, 1)]
    assert choose_threshold(table, max_wrong_rate=0.5) == table[0]
    assert choose_threshold(table, max_wrong_rate=2 / 6) == table[1]
    assert choose_threshold(table, max_wrong_rate=0.1) is None


def test_the_simulation_follows_the_candidate_count() -> None:
    data = Dataset("fallback", (Pair(0, "open the file", "close the file", True), Pair(1, "weather today", "x", False)))
    angles = {"open the file": 180, "close the file": 185, "weather today": 270, "x": 0}
    embedding = CallableEmbedding(lambda texts: np.array([_unit(angles[t]) for t in texts]), dim=2)
    def guard(cached: str, new: str) -> str | None:
        return "test" if cached == "open the file" else None

    vetoed = prepare(data, embedding, guard=guard, k=3)
    assert served(vetoed, -1.0).tolist() == [1, 1]  # with 3 candidates: the nearest is vetoed, the second served
    assert served(vetoed, 0.9).tolist() == [-1, -1]  # ... but only when it is above the threshold
    nearest_only = prepare(data, embedding, guard=guard)  # the cache's SEMANTIC_CANDIDATES = 1
    assert served(nearest_only, -1.0).tolist() == [-1, 1]  # a vetoed nearest is a miss


def test_calibrate_reports_raw_and_guarded_and_chooses_on_the_named_dataset() -> None:
    result = calibrate([TOY], EMBEDDING, [0.8, 0.9, 0.99], select_on="toy")
    assert set(result.raw) == set(result.guarded) == {"toy"}
    assert result.raw["toy"][0].wrong > result.guarded["toy"][0].wrong
    assert result.vetoes["toy"] == {"antonym": 1}
    assert result.chosen is None  # the exact hit on a negative pair is wrong at every threshold
    report = format_report(result)
    assert "| 0.90 |" in report and "antonym 1" in report


def test_dataset_loaders_read_each_format(tmp_path) -> None:
    (tmp_path / "gptcache_mock_data.json").write_text(json.dumps([{"origin": "a b", "similar": "a c"}]))
    (tmp_path / "qqp_val.csv").write_text('question1,question2,is_duplicate\n"x, y",z,1\nu,v,0\n')
    (tmp_path / "paws_wiki_dev.tsv").write_text('1\tThe "big" one .\tThe one big .\t0\n2\tp q\tq p\t1\n')
    gpt, qqp, paws = load_datasets(tmp_path)
    assert gpt.pairs == (Pair(0, "a b", "a c", True),)
    assert qqp.pairs == (Pair(0, "x, y", "z", True), Pair(1, "u", "v", False))
    assert paws.pairs == (Pair(1, 'The "big" one .', "The one big .", False), Pair(2, "p q", "q p", True))
    assert paws.positives == 1


def test_missing_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        load_datasets(tmp_path, ["qqp"])
    with pytest.raises(InvalidInputError, match="unknown dataset"):
        load_datasets(tmp_path, ["imagenet"])


GPTCACHE = default_data_dir() / "gptcache_mock_data.json"


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(not GPTCACHE.is_file(), reason=f"{GPTCACHE} not present (shared calibration data)")
def test_default_threshold_keeps_wrong_hits_under_one_percent_on_gptcache(minilm) -> None:
    prepared = prepare(load_gptcache(GPTCACHE), minilm)
    at_default = rates(prepared, DEFAULT_THRESHOLD)
    assert at_default.queries == 999
    assert at_default.wrong_rate <= 0.01, f"{at_default.wrong} wrong hits at {DEFAULT_THRESHOLD}"
    assert at_default.right_rate >= 0.30  # and it still serves a useful share of paraphrases
    # The simulation decides as the real cache does, on a sample small enough to store quickly.
    sample = prepare(Dataset("sample", prepared.dataset.pairs[:150]), minilm)
    expected = served(sample, DEFAULT_THRESHOLD).tolist()
    # M >= (n-1)/2 and ef >= n make HNSW exact for n entries on any build, so the real cache must match.
    backend = SemanticKV(embedding=minilm, purge_interval=3600, hnsw_m=75, ef_search=150)
    with SemanticCache(backend, threshold=DEFAULT_THRESHOLD) as cache:  # the cosine decision this simulates
        for pair in sample.dataset.pairs:
            cache.store(pair.first, pair.id)
        for pair, entry in zip(sample.dataset.pairs, expected, strict=True):
            hit = cache.lookup(pair.second)
            assert (hit is None) == (entry < 0), pair
            assert hit is None or hit.response in sample.answers[entry]
