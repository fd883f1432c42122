"""How a cache decides semantic hits: the verifier by default, a cosine threshold on request; wrong-hit feedback."""

from __future__ import annotations

import base64
import json

import pytest

from semcache import ConfigurationError, InvalidInputError, SemanticCache, SemanticKV
from semcache._cache.decision import PRESETS, ThresholdDecision, VerifierDecision
from semcache._cache.feedback import OperatingPoint, read_operating_point, refit, write_operating_point
from semcache._cache.verifier.model import shipped_verifier
from semcache.embeddings import HashEmbedding


@pytest.fixture
def verified(minilm):
    with SemanticCache(SemanticKV(embedding=minilm, purge_interval=3600)) as cache:
        yield cache


@pytest.mark.model
def test_the_default_with_the_packaged_model_is_the_verifier_at_one_percent(verified):
    assert isinstance(verified.decision, VerifierDecision)
    assert verified.decision.max_wrong_rate == PRESETS["balanced"] == 0.01
    assert verified.threshold is None
    verified.store("What is the capital of Japan?", "Tokyo")
    verified.store("How do I enable dark mode?", "Settings > Display > Dark.")
    hit = verified.lookup("what's the capital of japan")  # cosine 0.90: a miss at any safe cosine threshold
    assert hit is not None and hit.response == "Tokyo" and hit.score is not None and hit.prompt
    assert hit.score >= verified.decision.score_threshold
    why = verified.explain("How do I disable dark mode?")  # cosine 0.93: a hit at a 0.90 threshold
    assert why.hit is None and why.similarity > 0.9 and why.score < verified.decision.score_threshold
    assert why.reason.startswith("verifier ") and why.guard == "antonym"
    assert verified.stats.verifier_refusals == 1 and verified.stats.semantic_hits == 1


@pytest.mark.model
def test_stricter_rates_serve_from_higher_scores(minilm):
    backend = SemanticKV(embedding=minilm, purge_interval=3600)
    thresholds = [SemanticCache(backend, max_wrong_rate=rate).decision.score_threshold for rate in
                  ("loose", "balanced", "strict")]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]
    assert SemanticCache(backend, max_wrong_rate=0.01).decision == SemanticCache(backend).decision
    with pytest.raises(ConfigurationError, match="unknown preset 'sloppy'"):
        SemanticCache(backend, max_wrong_rate="sloppy")
    with pytest.raises(ConfigurationError, match="not both"):
        SemanticCache(backend, threshold=0.9, max_wrong_rate=0.01)


@pytest.mark.model
def test_a_threshold_decides_by_cosine_and_the_guard_as_before(minilm):
    with SemanticCache(SemanticKV(embedding=minilm, purge_interval=3600), threshold=0.9) as cache:
        assert cache.decision == ThresholdDecision(0.9, True) and cache.threshold == 0.9
        cache.store("How do I enable dark mode?", "Settings > Display > Dark.")
        assert cache.lookup("How can I enable dark mode?").score is None  # a cosine threshold decided
        why = cache.explain("How do I disable dark mode?")
        assert why.hit is None and why.reason == "guard: antonym" and why.score is None
        assert cache.stats.vetoes_by_reason == {"antonym": 1}


def test_an_embedder_the_verifier_was_not_trained_for_decides_by_the_default_threshold():
    with SemanticCache(SemanticKV(embedding=HashEmbedding(dim=32))) as cache:
        assert cache.decision == ThresholdDecision(0.94, True)
        key = cache.store("What is 2+2?", "4")
        assert "verifier" not in json.loads(cache.backend.get(key))  # no word pieces to keep
        with pytest.raises(ConfigurationError, match="max_wrong_rate needs the verifier"):
            SemanticCache(cache.backend, max_wrong_rate=0.01)


@pytest.mark.model
def test_entries_keep_the_verifiers_data_whatever_decides(minilm):
    with SemanticCache(SemanticKV(embedding=minilm, purge_interval=3600), threshold=0.94) as cache:
        key = cache.store("What is the capital of Japan?", "Tokyo")
        [bulk_key] = cache.store_many({"What is the boiling point of water?": "100 C"})
        for stored in (key, bulk_key):
            record = json.loads(cache.backend.get(stored))
            side = shipped_verifier().entry_side(record["prompt"], base64.b64decode(record["verifier"]))
            assert len(side.ids) > 0
        # Switching the same data to the verifier works at once.
        assert SemanticCache(cache.backend).lookup("what's the capital of japan") is not None


def test_a_path_is_not_a_backend(tmp_path):
    with pytest.raises(ConfigurationError, match=r"pass SemanticCache\(SemanticKV\('.*some-dir'\)\)"):
        SemanticCache(str(tmp_path / "some-dir"))
    with pytest.raises(ConfigurationError, match="a path is not a backend"):
        SemanticCache(tmp_path)


@pytest.mark.model
def test_a_reported_wrong_hit_is_deleted_counted_and_logged_and_survives_clear(verified):
    verified.store("What is the capital of Japan?", "Tokyo", scope={"tenant": "a"})
    hit = verified.lookup("what's the capital of japan", scope={"tenant": "a"})
    assert hit is not None
    assert verified.report_wrong_hit(hit) is True
    assert verified.lookup("what's the capital of japan", scope={"tenant": "a"}) is None  # deleted
    assert verified.report_wrong_hit(hit.key) is False  # already gone; counted again all the same
    assert verified.stats.wrong_hits_reported == 2
    verified.clear()
    (report,) = verified.reports()
    assert report.prompt == "what's the capital of japan"
    assert report.cached_prompt == "What is the capital of Japan?"
    assert report.score == pytest.approx(hit.score) and report.scope == verified.scope_id({"tenant": "a"})
    with pytest.raises(InvalidInputError, match="namespace 'semcache'"):
        verified.report_wrong_hit("other/namespace/key")


def test_refit_keeps_reported_pairs_out_and_a_new_cache_reads_it():
    from semcache._cache.feedback import Report

    reports = [Report("q", "c", "s", 0.9, score, 0.0) for score in (0.78, 0.80, 0.83, 0.86, 0.88, 0.90, 0.91, 0.93,
                                                                    0.95, 0.97)]
    point = refit(reports, 0.77)
    assert point.score_threshold == pytest.approx(0.9501)  # one report of ten (10 %) stays above it
    assert point.reports == 10 and point.previous == 0.77
    assert sum(report.score >= point.score_threshold for report in reports) <= 1
    assert refit([Report("q", "c", "s", 0.9, None, 0.0)], 0.77).score_threshold == 0.77  # no scores: no change
    assert refit(reports[:1], 0.99).score_threshold == 0.99  # never below the current point


@pytest.mark.model
def test_a_refitted_operating_point_is_what_the_namespace_serves_from(minilm):
    backend = SemanticKV(embedding=minilm, purge_interval=3600)
    default = SemanticCache(backend).decision.score_threshold
    write_operating_point(backend, "tenant-a", OperatingPoint(0.95, 30, default))
    assert read_operating_point(backend, "tenant-a").score_threshold == 0.95
    assert SemanticCache(backend, namespace="tenant-a").decision.score_threshold == 0.95
    assert SemanticCache(backend, namespace="tenant-b").decision.score_threshold == default  # its own namespace only
    assert SemanticCache(backend, namespace="tenant-a", max_wrong_rate=0.01).decision.score_threshold == default
