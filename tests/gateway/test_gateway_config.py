"""The gateway's config file and per-request plans: each mistake named at load time or as a 400."""

from __future__ import annotations

from pathlib import Path

import pytest

from semcache._gateway.auth import Caller, KeyTable, bearer_key
from semcache._gateway.config import GatewayConfig, Passthrough, Tenant, hash_key
from semcache._gateway.requests import BadRequest, plan_for
from semcache.errors import ConfigurationError

UPSTREAM = {"name": "up", "base_url": "http://127.0.0.1:9/v1"}
TENANT = {"name": "team-a", "key_hashes": [hash_key("sk-a")]}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"


def config(**sections: object) -> GatewayConfig:
    return GatewayConfig.from_dict({"upstreams": [UPSTREAM], "tenants": [TENANT], **sections})


def test_the_example_config_loads() -> None:
    loaded = GatewayConfig.load(EXAMPLE)
    assert loaded.server.host == "127.0.0.1" and loaded.upstreams


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"upstreams": []}, "at least one [[upstreams]]"),
        ({"upstreams": [{"name": "up", "base_url": "ftp://x"}]}, "upstreams[0].base_url"),
        ({"upstreams": [UPSTREAM, UPSTREAM]}, "'up' appears twice"),
        ({"tenants": [{"name": "a.b", "key_hashes": []}]}, "tenants[0].name"),
        ({"tenants": [{"name": "a", "key_hashes": ["sk-plain-text"]}]}, "never stored in plain text"),
        ({"tenants": [TENANT, {**TENANT, "name": "b"}]}, "key hash"),
        ({"tenants": [{**TENANT, "sampling": "some"}]}, "tenants[0].sampling"),
        ({"tenants": [{**TENANT, "max_wrong_rate": "lax"}]}, "tenants[0].max_wrong_rate"),
        ({"tenants": [{**TENANT, "threshold": 0.9, "max_wrong_rate": 0.01}]}, "not both"),
        ({"server": {"host": "0.0.0.0"}}, "allow_remote"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"colour": "blue"}}, "unknown field 'colour'"),
        ({"cache": {"path": "a", "cluster": "b"}}, "not both"),
        ({"prices": {"gpt-x": [1]}}, "prices.gpt-x"),
        ({"tenants": []}, "no [[tenants]] and passthrough off"),
    ],
)
def test_a_config_mistake_is_named(sections: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as raised:
        config(**sections)
    assert named in str(raised.value)


def test_upstreams_are_chosen_by_the_longest_model_prefix() -> None:
    chosen = config(upstreams=[{**UPSTREAM, "name": "any"}, {**UPSTREAM, "name": "gpt", "models": ["gpt-"]},
                               {**UPSTREAM, "name": "mini", "models": ["gpt-4o-mini"]}])
    assert chosen.upstream_for("gpt-4o-mini-2024").name == "mini"
    assert chosen.upstream_for("gpt-4.1").name == "gpt"
    assert chosen.upstream_for("claude").name == "any"
    assert config(upstreams=[{**UPSTREAM, "models": ["gpt-"]}]).upstream_for("claude") is None
    assert config().price_of("gpt-4o-mini-2024-07-18") == (0.15, 0.60)


def test_keys_map_to_tenants_and_pass_through_derives_a_stable_tenant() -> None:
    tenant = Tenant("team-a", (hash_key("sk-a"),))
    keys = KeyTable([tenant], passthrough=Passthrough(enabled=True))
    assert keys.caller("sk-a", tenant) == Caller(tenant)
    forwarded = keys.caller("sk-provider-key", tenant)
    assert forwarded is not None and forwarded.forward_key == "sk-provider-key"
    assert forwarded.tenant.name.startswith("pt-") and "provider" not in forwarded.tenant.name
    assert keys.caller("sk-provider-key", tenant).tenant.name == forwarded.tenant.name
    assert keys.caller("sk-other", tenant).tenant.name != forwarded.tenant.name
    assert KeyTable([tenant]).caller("sk-unknown", tenant) is None
    assert bearer_key({"authorization": "Bearer  sk-a "}) == "sk-a" and bearer_key({}) is None


def plan(body: dict[str, object], headers: dict[str, str] | None = None, tenant: Tenant | None = None) -> object:
    caller = Caller(tenant or Tenant("team-a"))
    return plan_for("chat.completions", body, headers or {}, caller, default_rate=0.01)


CHAT = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}


def test_a_plan_scopes_like_the_python_wrapper_and_reads_the_controls() -> None:
    made = plan(CHAT, {"cache-control": "no-cache", "x-semcache-ttl": "60", "x-semcache-namespace": "docs"})
    assert made.prompt == "Hi" and made.namespace == "gw.team-a.docs"
    assert "Be brief." in made.scope and not made.lookup and made.store and made.ttl == 60
    assert plan(CHAT).scope != plan({**CHAT, "max_tokens": 5}).scope  # answer-shaping parameters are scope
    assert plan(CHAT).scope == plan({**CHAT, "user": "u1", "stream": False}).scope  # transport fields are not
    assert plan(CHAT, {"cache-control": "no-cache, no-store"}) is None
    assert plan({**CHAT, "temperature": 0.7}) is None
    assert plan({**CHAT, "temperature": 0.7}, tenant=Tenant("t", sampling="all")) is not None


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"x-semcache-ttl": "forever"}, "x-semcache-ttl"),
        ({"x-semcache-namespace": "a/b"}, "x-semcache-namespace"),
        ({"x-semcache-max-wrong-rate": "0.05"}, "x-semcache-max-wrong-rate"),  # looser than the default 1 %
        ({"x-semcache-max-wrong-rate": "lax"}, "x-semcache-max-wrong-rate"),
        ({"x-semcache-threshold": "-1"}, "x-semcache-threshold"),
    ],
)
def test_a_bad_control_header_is_a_400_naming_it(headers: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequest) as raised:
        plan(CHAT, headers)
    assert raised.value.param == param and raised.value.status == 400
