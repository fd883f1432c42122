"""Property tests: SemanticKV behaves like a dict with TTLs, whatever the operation order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from semcache import InvalidInputError, SemanticKV
from semcache.embeddings import HashEmbedding

# Few distinct keys so that puts overwrite and deletes hit; some non-ASCII ones.
keys = st.sampled_from(["a", "b", "ab", "abc", "b/1", "b/2", "ключ", "键", "x" * 1024])
values = st.binary(max_size=64) | st.text(max_size=32).map(lambda text: text.encode("utf-8", "surrogatepass"))
ttls = st.sampled_from([0, 0, 1, 5, 50, 1_000])


class KVModel(RuleBasedStateMachine):
    """The model: ``key -> (value, expires_at_ms or 0)``; an entry is live while ``now < expires``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000
        self.model: dict[str, tuple[bytes, int]] = {}
        self.kv = SemanticKV(embedding=HashEmbedding(dim=16), clock=lambda: self.now, purge_interval=3600)

    def live(self) -> dict[str, bytes]:
        return {k: v for k, (v, exp) in self.model.items() if not (0 < exp <= self.now)}

    @rule(key=keys, value=values, ttl=ttls)
    def put(self, key: str, value: bytes, ttl: int) -> None:
        assert self.kv.put(key, value, ttl) is True
        self.model[key] = (value, self.now + ttl if ttl else 0)

    @rule(key=keys)
    def get(self, key: str) -> None:
        assert self.kv.get(key) == self.live().get(key)

    @rule(key=keys)
    def exists(self, key: str) -> None:
        assert self.kv.exists(key) == (key in self.live())

    @rule(key=keys)
    def delete(self, key: str) -> None:
        # delete reports whether the key was stored, expired-but-not-yet-purged included.
        assert self.kv.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(prefix=st.sampled_from(["", "a", "b", "b/", "к", "z"]), limit=st.integers(0, 10))
    def scan(self, prefix: str, limit: int) -> None:
        expected = sorted(k for k in self.live() if k.startswith(prefix))[:limit]
        assert self.kv.scan(prefix, limit) == expected

    @rule(ms=st.sampled_from([1, 4, 10, 100, 2_000]))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def purge(self) -> None:
        doomed = [k for k, (_, exp) in self.model.items() if 0 < exp <= self.now]
        removed = self.kv.purge_expired()
        assert removed == len(doomed)
        for key in doomed:
            del self.model[key]

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear_all(self) -> None:
        assert self.kv.clear_all() == len(self.model)
        self.model.clear()

    @rule(key=st.sampled_from(["", "y" * 1025]), value=values)
    def bad_put_stores_nothing(self, key: str, value: bytes) -> None:
        with pytest.raises(InvalidInputError):
            self.kv.put(key, value)

    @invariant()
    def agrees_with_model(self) -> None:
        live = self.live()
        assert self.kv.scan("", 100) == sorted(live)
        assert len(self.kv) == len(self.model)  # expired entries stay until purged

    @invariant()
    def search_returns_only_live_current_values(self) -> None:
        live = self.live()
        for result in self.kv.search("a b abc", top_k=20):
            assert live.get(result.key) == result.value

    def teardown(self) -> None:
        self.kv.close()


TestKVModel = KVModel.TestCase
TestKVModel.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_string_and_json_helpers_round_trip(hash_embedding):
    with SemanticKV(embedding=hash_embedding) as kv:
        assert kv.put_string("s", "héllo wörld")
        assert kv.get_string("s") == "héllo wörld"
        doc = {"b": [1, 2.5, None, True], "a": {"nested": "ü"}}
        assert kv.put_json("j", doc)
        assert kv.get_json("j") == doc
        assert kv.get_string("missing") is None and kv.get_json("missing") is None
