"""The hit verifier: the shipped parameters load, entries round-trip, features and scores of fixed pairs."""

from __future__ import annotations

import numpy as np
import pytest

from semcache._cache.verifier import lexical
from semcache._cache.verifier.features import ALL_NAMES, TOKEN_NAMES, Side, token_features
from semcache._cache.verifier.lexical import TextInfo
from semcache._cache.verifier.model import DEFAULT_PATH, Verifier, shipped_verifier
from semcache.embeddings import TokenVectors
from semcache.errors import ConfigurationError


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return shipped_verifier()


def content_tokens(verifier: Verifier, count: int, seed: int = 0) -> TokenVectors:
    """``count`` random word-piece vectors with ids of content words (ids the token weights do not zero)."""
    rng = np.random.default_rng(seed)
    content_ids = np.flatnonzero(verifier.token_weights > 0)
    ids = rng.choice(content_ids, size=count, replace=False).astype(np.int32)
    return TokenVectors(rng.standard_normal((count, 384)).astype(np.float32), ids)


def lexical_of(first: str, second: str) -> dict[str, float]:
    return dict(zip(lexical.NAMES, lexical.pair_features(TextInfo(first), TextInfo(second)), strict=True))


def test_the_shipped_file_loads_small_with_ordered_operating_points(verifier):
    assert DEFAULT_PATH.stat().st_size <= 10 * 1024 * 1024
    assert verifier.feature_names == ALL_NAMES
    points = verifier.operating_points
    assert set(points) == {"strict", "default", "loose"}
    assert points["strict"] >= points["default"] >= points["loose"] > 0
    assert verifier.serving_threshold("default") == points["default"]
    assert verifier.codec.dim == verifier.codec.projection.shape[1]


def test_an_unknown_operating_point_is_a_configuration_error(verifier):
    with pytest.raises(ConfigurationError, match="strict"):
        verifier.serving_threshold("lenient")


def test_entry_data_round_trips_through_entry_side(verifier):
    tokens = content_tokens(verifier, 7)
    data = verifier.entry_data(tokens)
    entry = verifier.entry_side("How do I reverse a list in Python?", data)
    query = verifier.query_side("How do I reverse a list in Python?", tokens)
    assert len(data) == 2 + 7 * (verifier.codec.dim + 2 + 2)  # count, int8 rows, float16 scales, uint16 ids
    assert np.array_equal(entry.ids, tokens.ids)
    assert np.allclose(entry.weights, verifier.token_weights[tokens.ids])
    # int8 storage moves each unit row by about 1%: the stored vectors still align with the query's
    assert np.allclose(np.einsum("ij,ij->i", entry.vectors, query.vectors), 1.0, atol=2e-3)


def test_truncated_entry_data_is_refused(verifier):
    data = verifier.entry_data(content_tokens(verifier, 3))
    with pytest.raises(ValueError):
        verifier.entry_side("prompt", data[:-2])


def test_stopword_only_prompts_keep_every_word_piece(verifier):
    stop_ids = np.flatnonzero(verifier.token_weights == 0)[:2].astype(np.int32)
    tokens = TokenVectors(np.ones((2, 384), dtype=np.float32), stop_ids)
    side = verifier.entry_side("what is it", verifier.entry_data(tokens))
    assert np.array_equal(side.ids, stop_ids)
    assert np.array_equal(side.weights, np.ones(2, dtype=np.float32))


def test_a_prompt_aligned_with_itself_has_perfect_token_features():
    vectors = np.eye(4, 8, dtype=np.float32)
    side = Side(TextInfo("a b c d"), vectors, np.arange(4), np.ones(4, dtype=np.float32))
    features = dict(zip(TOKEN_NAMES[1:], token_features(side, side), strict=True))
    assert features["tok_a_mean"] == features["tok_b_mean"] == pytest.approx(1.0)
    assert features["tok_b_un60"] == features["id_b_only"] == features["order_inv"] == 0.0
    assert features["wcos"] == pytest.approx(1.0)


def test_lexical_features_of_known_pairs():
    assert lexical_of("How do I enable dark mode?", "How do I disable dark mode?")["antonym"] == 1.0
    assert lexical_of("How do I stop my cat scratching?", "Why does my cat scratch?")["wh_mismatch"] == 1.0
    assert lexical_of("How many legs does a spider have?", "how many legs do spiders have")["wh_mismatch"] == 0.0
    assert lexical_of("How many legs does a spider have?", "How long does a spider live?")["wh_mismatch"] == 1.0
    assert lexical_of("Translate hello from English to French", "Translate hello from French to English")[
        "direction_swap"] == 2.0
    assert lexical_of("Travel from London to Paris", "Travel to Paris from London")["direction_swap"] == 0.0
    added = lexical_of("Center a div horizontally and vertically", "Center a div horizontally")
    assert (added["added_a"], added["added_b"]) == (1.0, 0.0)
    typo = lexical_of("What is the recommended dose?", "whats the recomended dose")
    assert (typo["typo_pairs"], typo["unexplained_a"], typo["unexplained_b"]) == (1.0, 0.0, 0.0)


def test_one_row_and_a_batch_score_alike(verifier):
    rng = np.random.default_rng(1)
    rows = rng.uniform(0, 1, (5, len(ALL_NAMES)))
    batch = verifier.score(rows)
    assert np.allclose([verifier.score(row[None])[0] for row in rows], batch, atol=1e-12)
    assert ((batch > 0) & (batch < 1)).all()


def pair_score(verifier: Verifier, minilm, cached: str, query: str) -> float:
    """The score of ``query`` against ``cached`` alone in a scope (no second neighbour)."""
    cached_vector, cached_tokens = minilm.embed_one_with_tokens(cached)
    query_vector, query_tokens = minilm.embed_one_with_tokens(query)
    similarity = float(cached_vector @ query_vector)
    entry = verifier.entry_side(cached, verifier.entry_data(cached_tokens))
    return verifier.score_candidate(verifier.query_side(query, query_tokens), entry, similarity, [similarity])


SERVED = [
    ("What is the capital of Japan?", "what's the capital of japan"),
    ("How do I reverse a list in Python?", "how to reverse a python list"),
]
# Scores just under the default point (0.799 < 0.807; training/verifier/NOTES.md): served from "loose" only.
SERVED_LOOSE = [("How many legs does a spider have?", "how many legs do spiders have")]
REFUSED = [
    ("How do I enable dark mode?", "How do I disable dark mode?"),
    ("What is the capital of France?", "What is the capital of Japan?"),
    ("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles."),
    ("How do I reverse a list in Python?", "How do I reverse a list in JavaScript?"),
]


@pytest.mark.model
@pytest.mark.parametrize(("cached", "query"), SERVED)
def test_paraphrases_are_served_at_the_default_point(verifier, minilm, cached, query):
    assert pair_score(verifier, minilm, cached, query) >= verifier.serving_threshold("default")


@pytest.mark.model
@pytest.mark.parametrize(("cached", "query"), SERVED_LOOSE)
def test_near_paraphrases_are_served_at_the_loose_point(verifier, minilm, cached, query):
    assert pair_score(verifier, minilm, cached, query) >= verifier.serving_threshold("loose")


@pytest.mark.model
@pytest.mark.parametrize(("cached", "query"), REFUSED)
def test_hard_negatives_are_refused_even_at_the_loose_point(verifier, minilm, cached, query):
    assert pair_score(verifier, minilm, cached, query) < verifier.serving_threshold("loose")
