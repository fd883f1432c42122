"""A new data directory is its owner's alone: it holds every cached prompt and answer."""

from __future__ import annotations

from semcache import SemanticKV
from semcache.embeddings import HashEmbedding


def test_a_new_store_directory_is_not_readable_by_others(tmp_path):
    path = tmp_path / "store"
    with SemanticKV(path, embedding=HashEmbedding(dim=8)) as kv:
        kv.put("k", "a private answer")
    assert path.stat().st_mode & 0o077 == 0
