"""Property test: SemanticCache against a model keyed by (normalised prompt, canonical scope)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from semcache import SemanticCache, SemanticKV, canonical_scope, normalize_prompt
from semcache.embeddings import HashEmbedding

# Prompts that collide after normalisation, differ only in case (same HashEmbedding
# vector, so the semantic path can serve them), or differ in one word.
prompts = st.sampled_from(
    [
        "how do i sort a list",
        "  how do i   sort a list ",
        "How do I sort a list",
        "how do i sort a dict",
        "what is a monad",
        "what\u3000is a monad",
        "explain monads simply",
    ]
)
scopes = st.sampled_from([None, "t1", {"tenant": "a", "model": "m"}, {"model": "m", "tenant": "a"}, {"tenant": "b"}])
responses = st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers(), st.lists(st.booleans(), max_size=3))


class CacheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = SemanticCache(SemanticKV(embedding=HashEmbedding(dim=64), purge_interval=3600), threshold=0.8)
        self.model: dict[tuple[str, str], object] = {}

    @staticmethod
    def address(prompt: str, scope: object) -> tuple[str, str]:
        return normalize_prompt(prompt), canonical_scope(scope)  # type: ignore[arg-type]

    @rule(prompt=prompts, scope=scopes, response=responses)
    def store(self, prompt, scope, response):
        self.cache.store(prompt, response, scope=scope)
        self.model[self.address(prompt, scope)] = response

    @rule(prompt=prompts, scope=scopes)
    def lookup(self, prompt, scope):
        hit = self.cache.lookup(prompt, scope=scope)
        address = self.address(prompt, scope)
        if address in self.model:
            assert hit is not None and hit.exact and hit.response == self.model[address]
            return
        if hit is not None:  # a semantic hit: only ever an answer stored in the same scope
            assert not hit.exact
            same_scope = [r for (p, s), r in self.model.items() if s == address[1]]
            assert hit.response in same_scope

    @rule(prompt=prompts, scope=scopes)
    def delete(self, prompt, scope):
        assert self.cache.delete(prompt, scope=scope) == (self.address(prompt, scope) in self.model)
        self.model.pop(self.address(prompt, scope), None)

    @rule(scope=scopes)
    def clear_scope(self, scope):
        doomed = [a for a in self.model if a[1] == canonical_scope(scope)]
        assert self.cache.clear(scope) == len(doomed)
        for address in doomed:
            del self.model[address]

    @rule()
    def clear_all(self):
        assert self.cache.clear() == len(self.model)
        self.model.clear()

    def teardown(self) -> None:
        self.cache.close()


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
