"""The search benchmark's prompt corpus: deterministic texts, held-out queries, the embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.embedded import (
    PromptOutcome,
    SearchQuality,
    format_prompts,
    format_report,
    measure_prompt_search,
    run,
    run_prompt_search,
    settle,
)
from benchmarks.prompts import (
    Dataset,
    Pair,
    build_corpus,
    cache_file,
    compose_all,
    embed_cached,
    same_text_key,
)
from semcache._engine.kv import SemanticKV
from semcache._quality.calibrate import default_data_dir
from semcache.embeddings import HashEmbedding
from semcache.errors import InvalidInputError

TOPICS = ("bread", "tea", "Python", "taxes", "running", "chess", "guitar", "rust", "Paris", "sleep")


def toy_data() -> list[Dataset]:
    """Forty question pairs, half duplicates, with a few texts repeated in other spellings."""
    pairs = []
    for n, topic in enumerate(TOPICS * 4):
        ask = f"How do I start with {topic}, step {n}?"
        if n % 2:
            pairs.append(Pair(n, ask, f"What is the first step {n} with {topic}?", True))
        else:
            pairs.append(Pair(n, ask, f"Why is {topic} number {n} so popular?", False))
    pairs.append(Pair(99, "how do i start with BREAD,  step 0?", "Bread step zero?", True))  # a respelling of pair 0
    return [Dataset("toy", tuple(pairs))]


def test_the_same_arguments_build_the_same_corpus_and_a_bigger_one_extends_it() -> None:
    small = build_corpus(toy_data(), 50, 5, seed=3)
    again = build_corpus(toy_data(), 50, 5, seed=3)
    big = build_corpus(toy_data(), 200, 5, seed=3)
    assert small == again
    assert big.stored[:50] == small.stored
    assert (big.paraphrases, big.unrelated) == (small.paraphrases, small.unrelated)
    assert build_corpus(toy_data(), 50, 5, seed=4) != small


def test_stored_texts_are_distinct_and_queries_are_held_out() -> None:
    corpus = build_corpus(toy_data(), 300, 5, seed=3)
    keys = [same_text_key(text) for text in corpus.stored]
    assert len(corpus.stored) == 300 and len(set(keys)) == 300
    assert corpus.originals < 300  # the toy data has fewer sentences: the rest are composed
    composed = corpus.stored[corpus.originals :]
    assert all(" Also, " in text or ", and " in text for text in composed)
    stored = set(keys)
    for pair in corpus.paraphrases:
        assert same_text_key(pair.query) not in stored
    # Unrelated queries and their pair partners are never stored, not even inside a composed text.
    data: dict[str, str] = {}
    for pair in toy_data()[0].pairs:
        data.setdefault(same_text_key(pair.first), same_text_key(pair.second))
    for text in corpus.unrelated:
        assert same_text_key(text) not in stored and data[same_text_key(text)] not in stored
        assert not any(text in other for other in corpus.stored)
    # The first stored texts are the paraphrase pairs' first texts, in query order.
    assert [pair.entry for pair in corpus.paraphrases] == list(range(5))


def test_paraphrase_pairs_come_from_duplicates_only() -> None:
    corpus = build_corpus(toy_data(), 60, 5, seed=3)
    duplicates = {p.second for p in toy_data()[0].pairs if p.positive}
    assert {pair.query for pair in corpus.paraphrases} <= duplicates
    negatives = {p.first for p in toy_data()[0].pairs if not p.positive}
    assert set(corpus.unrelated) <= negatives


def test_too_few_pairs_or_sources_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="duplicate"):
        build_corpus(toy_data(), 50, 500)
    with pytest.raises(InvalidInputError, match="at least two"):
        compose_all(["only one"], 3, seed=1)
    with pytest.raises(InvalidInputError, match="distinct composed"):
        compose_all(["a", "b"], 10, seed=1)  # two sources make at most four texts
    with pytest.raises(InvalidInputError, match=">= 1"):
        build_corpus(toy_data(), 0, 5)


def test_embed_cached_writes_once_and_reads_back(tmp_path: Path) -> None:
    texts = build_corpus(toy_data(), 40, 3, seed=3).texts()
    first = HashEmbedding(dim=32, memo_size=0)
    messages: list[str] = []
    made = embed_cached(first, texts, cache_dir=tmp_path, log=messages.append)
    assert made.shape == (len(texts), 32) and made.dtype == np.float32
    assert np.array_equal(made, first.embed(texts))
    assert cache_file(first, texts, tmp_path).is_file() and "saved" in messages[-1]

    second = HashEmbedding(dim=32, memo_size=0)  # same model id: the file is reused, the model not called
    again = embed_cached(second, texts, cache_dir=tmp_path, log=messages.append)
    assert np.array_equal(again, made) and second.model_calls == 0 and "read from" in messages[-1]

    # Other texts, another model id or another dimension: another file.
    assert cache_file(first, texts[:-1], tmp_path) != cache_file(first, texts, tmp_path)
    assert cache_file(HashEmbedding(dim=32, seed=1), texts, tmp_path) != cache_file(first, texts, tmp_path)
    assert cache_file(HashEmbedding(dim=16), texts, tmp_path) != cache_file(first, texts, tmp_path)


def test_a_cache_file_that_does_not_fit_is_replaced(tmp_path: Path) -> None:
    texts = ["one text", "another text"]
    embedding = HashEmbedding(dim=8, memo_size=0)
    path = cache_file(embedding, texts, tmp_path)
    np.save(path, np.zeros((3, 8), dtype=np.float32))
    messages: list[str] = []
    vectors = embed_cached(embedding, texts, cache_dir=tmp_path, log=messages.append)
    assert vectors.shape == (2, 8) and embedding.model_calls == 1
    assert any("ignoring" in message for message in messages)
    assert np.load(path).shape == (2, 8)


def test_no_cache_dir_writes_nothing(tmp_path: Path) -> None:
    embed_cached(HashEmbedding(dim=8), ["a text"], cache_dir=None)
    assert list(tmp_path.iterdir()) == []


def test_prompt_search_reports_every_size_and_the_sweep() -> None:
    corpus = build_corpus(toy_data(), 32, 5, seed=3)
    embedding = HashEmbedding(dim=32, memo_size=0)
    vectors = embedding.embed(corpus.texts())
    found = measure_prompt_search(embedding, corpus, vectors, (20, 32), sweep=(8, 48))
    assert set(found.unrelated) == set(found.paraphrase) == {1, 20, 32}
    assert set(found.sweep) == {8, 48}
    for table in (found.unrelated, found.paraphrase):
        for row in table.values():
            # An HNSW graph of at most 2*M+1 = 33 entries keeps every link, and ef_search (48) is above its
            # size: the search is exact on any hnswlib build (ef alone would not make it so past 33 entries).
            assert row.quality.recall_at_1 == 1.0
            assert row.quality.served_differently == 0.0  # so a cache answers as with an exact search
            assert row.timing.cpu.count == 5
    # Hash vectors carry no meaning, so the exact search rarely puts the partner first; HNSW agrees with it.
    for row in found.paraphrase.values():
        assert row.quality.partner_first == row.quality.partner_first_exact
    assert found.unrelated[1].quality == SearchQuality(1.0, 0.0)
    assert (found.entries, found.originals, found.paraphrase_pairs) == (32, corpus.originals, 5)
    lines = "\n".join(format_prompts(PromptOutcome(found, "embedded in 0 s")))
    assert "| 32 entries, paraphrase prompt |" in lines and "| 48 (this run) |" in lines


def test_mismatched_vectors_or_sizes_are_clear_errors() -> None:
    corpus = build_corpus(toy_data(), 30, 3, seed=3)
    embedding = HashEmbedding(dim=16)
    vectors = embedding.embed(corpus.texts())
    with pytest.raises(InvalidInputError, match="do not match"):
        measure_prompt_search(embedding, corpus, vectors[:-1], (30,))
    with pytest.raises(InvalidInputError, match="sizes go up to"):
        measure_prompt_search(embedding, corpus, vectors, (31,))


def test_missing_data_leaves_the_real_rows_out_and_keeps_the_random_ones(tmp_path: Path) -> None:
    embedding = HashEmbedding(dim=32, memo_size=0)
    report = run(embedding, (40,), rounds=2, queries=4, durable_puts=20, data_dir=tmp_path)
    assert report.prompts is not None and report.prompts.result is None
    text = format_report(report)
    assert "real prompt embeddings left out" in text and "not found" in text
    assert "| 40 entries, unrelated query |" in text and "random unit vectors: the worst case" in text
    assert "| 40 entries, held-out prompt |" not in text


DATA = default_data_dir()


@pytest.mark.model
@pytest.mark.skipif(not (DATA / "qqp_val.csv").is_file(), reason=f"{DATA} not present (shared data)")
def test_real_prompts_real_model_small(minilm, tmp_path: Path) -> None:
    messages: list[str] = []
    outcome = run_prompt_search(minilm, (32,), 10, cache_dir=tmp_path, log=messages.append)
    found = outcome.result
    assert found is not None and "saved to" in messages[-1]
    row = found.paraphrase[32]
    assert row.quality.recall_at_1 == 1.0  # 32 entries (at most 2*M+1): the graph keeps every link, so exact
    # Real paraphrases: the stored partner is the nearest text for most of them (fixed seed, fixed data).
    assert row.quality.partner_first_exact is not None and row.quality.partner_first_exact >= 0.8
    assert found.unrelated[32].quality.recall_at_1 == 1.0
    again = run_prompt_search(minilm, (32,), 10, cache_dir=tmp_path, log=messages.append)
    assert "read from" in messages[-1] and again.result is not None
    assert again.result.paraphrase[32].quality == row.quality


def test_settle_indexes_deferred_inserts_before_searches_are_timed() -> None:
    embedding = HashEmbedding(dim=256)
    with SemanticKV(embedding=embedding, purge_interval=3600) as kv:
        kv._state.set_index_backlog(100)  # as a replica does: inserts wait for a spare moment
        for row in range(30):
            kv.put(f"k{row}", b"v", text=f"text number {row}")
        assert kv._state.queued_index_ops == 30
        assert settle(kv) == 30 and kv._state.queued_index_ops == 0
        assert settle(kv) == 0
        assert kv.search("text number 7", 1)[0].key == "k7"
