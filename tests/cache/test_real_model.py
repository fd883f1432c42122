"""The real all-MiniLM-L6-v2 through SemanticCache: paraphrases hit, hard negatives miss."""

from __future__ import annotations

import pytest

from semcache import SemanticCache, SemanticKV
from semcache._cache.cache import DEFAULT_THRESHOLD

pytestmark = pytest.mark.model

STORED = {
    "How do I reset my password?": "Open Settings > Account > Reset password.",
    "How do I read a file in Python?": "with open(path) as f: f.read()",
    "How do I enable dark mode?": "Settings > Appearance > Dark.",
}


@pytest.fixture(scope="module")
def filled(minilm):
    with SemanticCache(SemanticKV(embedding=minilm)) as cache:
        for prompt, answer in STORED.items():
            cache.store(prompt, answer)
        yield cache


def test_the_packaged_model_is_stamped_with_its_name_and_dimension(minilm):
    assert (minilm.model_id, minilm.dim) == ("sentence-transformers/all-MiniLM-L6-v2", 384)


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How can I reset my password?", "How do I reset my password?"),
        ("How can I read a file using Python?", "How do I read a file in Python?"),
    ],
)
def test_a_paraphrase_hits_at_the_default_threshold(filled, query, cached):
    hit = filled.lookup(query)
    assert hit is not None and not hit.exact
    assert hit.cached_prompt == cached and hit.response == STORED[cached]
    assert DEFAULT_THRESHOLD <= hit.similarity < 1.0


@pytest.mark.parametrize(
    "query",
    ["How do I disable dark mode?", "How do I read a file in Rust?", "How do I bake sourdough bread?"],
)
def test_a_hard_negative_misses_at_the_default_threshold(filled, query):
    assert filled.lookup(query) is None


def test_the_guard_rejects_enable_vs_disable_even_below_the_default_threshold(minilm):
    """Embeddings put enable/disable very close; a looser threshold alone would serve the wrong answer."""
    with SemanticKV(embedding=minilm) as kv:
        unguarded = SemanticCache(kv, threshold=0.85, guard=False)
        guarded = SemanticCache(kv, threshold=0.85)
        unguarded.store("How do I enable dark mode?", "Settings > Appearance > Dark.")
        wrong = unguarded.lookup("How do I disable dark mode?")
        assert wrong is not None and wrong.similarity > 0.85  # the trap is real
        assert guarded.lookup("How do I disable dark mode?") is None
        assert guarded.stats.vetoes_by_reason == {"antonym": 1}
        assert guarded.lookup("How can I enable dark mode?") is not None


def test_exact_hits_skip_the_model(filled, minilm):
    calls = minilm.model_calls
    hit = filled.lookup("  How do I reset my   password? ")
    assert hit is not None and hit.exact and minilm.model_calls == calls


@pytest.mark.parametrize("name", ["no-such-org/no-such-model-xyz", "/nonexistent/model/dir"])
def test_an_unloadable_model_is_a_configuration_error(name):
    from semcache import ConfigurationError
    from semcache.embeddings import SentenceTransformerEmbedding

    with pytest.raises(ConfigurationError, match="cannot load sentence-transformers model"):
        SentenceTransformerEmbedding(name)
