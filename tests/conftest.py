"""Shared fixtures.  The real model loads offline from the packaged copy."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from semcache.embeddings import HashEmbedding, SentenceTransformerEmbedding  # noqa: E402


@pytest.fixture
def hash_embedding() -> HashEmbedding:
    """Deterministic, fast: for unit tests that do not judge meaning."""
    return HashEmbedding(dim=64)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedding:
    """The real all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedding()
