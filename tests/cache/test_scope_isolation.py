"""Scope isolation: two tenants share prompts, and no lookup ever returns the other tenant's answer."""

from __future__ import annotations

import random

from semcache import SemanticCache, SemanticKV
from semcache.embeddings import HashEmbedding

VERBS = "configure install debug deploy monitor secure migrate test document optimise".split()
THINGS = "database cluster webhook pipeline container firewall scheduler gateway cache queue".split()
PLACES = "staging production laptop kubernetes windows linux browser phone server cloud".split()


def prompts(count: int) -> list[str]:
    pick = random.Random(0)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[f"how do i {pick.choice(VERBS)} the {pick.choice(THINGS)} on {pick.choice(PLACES)} quickly"] = None
    return list(seen)


def test_two_tenants_ten_thousand_lookups_zero_cross_hits():
    tenants = {"acme": {"tenant": "acme", "model": "gpt-4o"}, "globex": {"model": "gpt-4o", "tenant": "globex"}}
    texts = prompts(600)
    only_acme = set(range(400, 600))  # stored for acme alone: globex lookups of these must not see acme's
    with SemanticCache(SemanticKV(embedding=HashEmbedding(dim=128)), threshold=0.75) as cache:
        for name, scope in tenants.items():
            for i, text in enumerate(texts):
                if name == "globex" and i in only_acme:
                    continue
                cache.store(text, f"{name}:{i}", scope=scope)

        pick = random.Random(1)
        hits = {"exact": 0, "semantic": 0}
        cross = acme_only_from_globex = 0
        for _ in range(10_000):
            name = pick.choice(list(tenants))
            i = pick.randrange(len(texts))
            words = texts[i].split()
            if pick.random() < 0.5:
                query = "  ".join(words)  # same normalised prompt: the exact path
            else:
                pick.shuffle(words)  # same words, other order: the semantic path
                query = " ".join(words)
            # Scope given with its keys in another order: the canonical hash must not care.
            scope = dict(reversed(list(tenants[name].items())))
            hit = cache.lookup(query, scope=scope)
            acme_only_from_globex += name == "globex" and i in only_acme
            if hit is None:
                continue
            hits["exact" if hit.exact else "semantic"] += 1
            if not hit.response.startswith(f"{name}:"):
                cross += 1
        assert cross == 0
        # The test is not vacuous: both paths served many hits, and prompts that only
        # acme stored were looked up as globex many times (and never got acme's answer).
        assert hits["exact"] > 3_000 and hits["semantic"] > 2_000
        assert acme_only_from_globex > 1_000


def test_a_scope_search_cannot_see_another_scopes_vectors():
    with SemanticKV(embedding=HashEmbedding(dim=64)) as kv:
        kv.put("a1", "identical text in both scopes", scope="tenant-a")
        kv.put("b1", "identical text in both scopes", scope="tenant-b")
        for scope, key in (("tenant-a", "a1"), ("tenant-b", "b1")):
            results = kv.search("identical text in both scopes", top_k=10, scope=scope)
            assert [r.key for r in results] == [key]
        assert kv.search("identical text in both scopes", top_k=10) == []  # the default scope is empty
        assert kv.stats()["scopes"] == 2
