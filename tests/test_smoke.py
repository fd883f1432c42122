from semcache import SemanticCache, SemanticKV


def test_put_get_search_roundtrip(hash_embedding):
    with SemanticKV(embedding=hash_embedding) as kv:
        assert kv.put("doc:api", "REST API endpoints and authentication")
        assert kv.get("doc:api") == b"REST API endpoints and authentication"
        assert [r.key for r in kv.search("API authentication", top_k=1)] == ["doc:api"]


def test_cache_exact_and_scope(hash_embedding):
    cache = SemanticCache(SemanticKV(embedding=hash_embedding))
    cache.store("What is 2+2?", "4", scope="t1")
    hit = cache.lookup("What is  2+2?", scope="t1")
    assert hit is not None and hit.exact and hit.response == "4"
    assert cache.lookup("What is 2+2?", scope="t2") is None
