"""The hit guard: hard negatives are vetoed with the right reason, paraphrases pass."""

from __future__ import annotations

import pytest

from semcache import SemanticCache, SemanticKV
from semcache._cache.guard import conflict

HARD_NEGATIVES = [
    ("How do I enable dark mode?", "How do I disable dark mode?", "antonym"),
    ("How do I read a file in Python?", "How do I read a file in Rust?", "entity"),
    ("How do I read a file in Java?", "How do I read a file in JavaScript?", "entity"),
    ("What is the capital of Austria?", "What is the capital of Australia?", "entity"),
    ("What is 2+2?", "What is 2+3?", "numbers"),
    ("What was the GDP of France in 2019?", "What was the GDP of France in 2020?", "numbers"),
    ("Convert 100 USD to EUR", "Convert 250 USD to EUR", "numbers"),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation"),
    ("Why can I log in?", "Why can't I log in?", "negation"),
    ("Why can I log in?", "Why can\u2019t I log in?", "negation"),  # typographic apostrophe
    ("Why does my app crash?", "Why doesnt my app crash?", "negation"),  # apostrophe dropped
    ("Sort the list in ascending order", "Sort the list in descending order", "antonym"),
    ("How do I upload a file to S3?", "How do I download a file from S3?", "antonym"),
]

PARAPHRASES = [
    ("How do I enable dark mode?", "How can I enable the dark mode?"),
    ("How do I read a file in Python?", "In Python, how do I read a file?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Are mediums real or not?", "Are mediums real?"),  # "or not" asks both ways
    ("Was Einstein an atheist? Why or why not?", "Is Einstein an atheist?"),
    ("What were your experiences in roll no. 1?", "What were your experiences in roll no.1?"),
    ("Why do people dislike Hilary Clinton?", "Why do people dislike Hillary Clinton?"),  # one edit apart
    ("Why do people make fun of Jack Jack?", "Why do people make fun of Jack-Jack?"),
    ("Give examples of Newton's second law", "Examples for Newtons second law?"),
    ("Tasks are demos for ML projects.", "Tasks are demos for Machine Learning projects."),
    ("Huggingface.js ships TS types.", "Hugging Face.js ships TypeScript types."),
    ("Can I save datasets in a Pythonic way?", "Can I save datasets using Python?"),
    ("Which laptop is best around 50,000?", "Which laptop is best around 50k?"),
    ("How do I lose weight in two months?", "How do I lose weight in 2 months?"),
    # A reworded paraphrase swaps one negation for another, or only one side is negated in passing.
    ("The builder is a no-code solution for audio datasets.", "The builder loads audio datasets without any coding."),
    (
        "Dataset streaming helps when you don\u2019t want to wait for a large dataset to download.",
        "Streaming datasets is useful when you don't want to wait for a huge dataset to be downloaded.",
    ),
    (
        "If the audio dataset doesn't have any associated metadata, the builder creates a label column.",
        "In the absence of metadata, the builder will generate a label column from the directory name.",
    ),
]


@pytest.mark.parametrize(("cached", "new", "reason"), HARD_NEGATIVES)
def test_hard_negative_is_vetoed_with_its_reason(cached: str, new: str, reason: str) -> None:
    assert conflict(cached, new) == reason
    assert conflict(new, cached) == reason  # whichever of the two was cached first


@pytest.mark.parametrize(("cached", "new"), PARAPHRASES)
def test_paraphrase_passes(cached: str, new: str) -> None:
    assert conflict(cached, new) is None
    assert conflict(new, cached) is None


def test_identical_prompts_never_conflict() -> None:
    for cached, new, _ in HARD_NEGATIVES:
        assert conflict(cached, cached) is None
        assert conflict(new, new) is None


def test_negation_needs_shared_words() -> None:
    # Same polarity difference, but the rest is reworded: a paraphrase, not an inserted "not".
    assert conflict("Why don't all months have the same number of days?", "Why do months differ in length?") is None
    assert (
        conflict(
            "Why don't all months have the same number of days?", "Why do all months have the same number of days?"
        )
        == "negation"
    )


def test_cache_applies_the_guard_and_counts_the_veto(hash_embedding) -> None:
    # HashEmbedding puts these close (they share most words); the guard must still refuse.
    with SemanticCache(SemanticKV(embedding=hash_embedding), threshold=0.5) as cache:
        cache.store("How do I enable dark mode?", "Settings > Display > Dark")
        assert cache.lookup("How do I disable dark mode?") is None
        assert cache.stats.vetoes_by_reason == {"antonym": 1}
        hit = cache.lookup("How can I enable dark mode?")
        assert hit is not None and not hit.exact and hit.response == "Settings > Display > Dark"


def test_cache_without_guard_serves_the_hard_negative(hash_embedding) -> None:
    with SemanticCache(SemanticKV(embedding=hash_embedding), threshold=0.5, guard=False) as cache:
        cache.store("How do I enable dark mode?", "Settings > Display > Dark")
        hit = cache.lookup("How do I disable dark mode?")
        assert hit is not None and hit.cached_prompt == "How do I enable dark mode?"
