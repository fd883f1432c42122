"""Per-request controls, upstream errors, bad input, feedback, admin and metrics, through a real gateway process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support.gateway import GatewayProcess
from support.wait import wait_until

from semcache.testing import FakeOpenAIServer

# Real gateway processes with the real model: not in the quick loop.
pytestmark = [pytest.mark.slow, pytest.mark.model]

MODEL = "gpt-4o-mini"


def post(gateway: GatewayProcess, prompt: str, ns: str, *, tenant: str = "alpha", headers: dict[str, str] | None = None,
         **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **body}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=payload, timeout=60,
                      headers={"authorization": f"Bearer {gateway.keys[tenant]}", "x-semcache-namespace": ns,
                               **(headers or {})})


def stored(gateway: GatewayProcess, prompt: str, ns: str, **kwargs: Any) -> httpx.Response:
    """Poll until ``prompt`` is served from the cache (its answer is stored in the background)."""
    return wait_until(lambda: (r := post(gateway, prompt, ns, **kwargs)).headers["x-semcache"] == "hit" and r,
                      what=f"{prompt!r} stored")


def test_no_cache_skips_the_lookup_and_stores_no_store_does_not_store(
    gateway: GatewayProcess, upstream: FakeOpenAIServer, ns: str
) -> None:
    stored(gateway, "Explain TCP slow start.", ns)
    before = upstream.count("chat.completions")
    fresh = post(gateway, "Explain TCP slow start.", ns, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-semcache"] == "miss" and upstream.count("chat.completions") == before + 1

    first = post(gateway, "Explain UDP hole punching.", ns, headers={"cache-control": "no-store"})
    assert first.headers["x-semcache"] == "miss"
    second = post(gateway, "Explain UDP hole punching.", ns, headers={"cache-control": "no-store"})
    assert second.headers["x-semcache"] == "miss"  # nothing was stored
    both = post(gateway, "Explain TCP slow start.", ns, headers={"cache-control": "no-cache, no-store"})
    assert both.headers["x-semcache"] == "bypass"


def test_a_ttl_header_expires_the_answer(gateway: GatewayProcess, ns: str) -> None:
    # Stored with a 2 s lifetime (each miss of the polling stores it again), served, then expired:
    # a miss again within a bounded wait, with no assert on how long it took.
    stored(gateway, "What day is the market open?", ns, headers={"x-semcache-ttl": "2"})
    wait_until(lambda: post(gateway, "What day is the market open?", ns,
                            headers={"cache-control": "no-store"}).headers["x-semcache"] == "miss",
               what="the entry to expire")
    for bad in ("0", "-3", "soon", "nan", "1e12"):
        response = post(gateway, "x", ns, headers={"x-semcache-ttl": bad})
        assert response.status_code == 400 and response.json()["error"]["param"] == "x-semcache-ttl"


def test_namespaces_are_separate_and_invalidated_alone(gateway: GatewayProcess, ns: str) -> None:
    stored(gateway, "How tall is Mount Everest?", ns)
    assert post(gateway, "How tall is Mount Everest?", ns + "x").headers["x-semcache"] == "miss"
    stored(gateway, "How tall is Mount Everest?", ns + "x")
    with gateway.admin() as admin:
        result = admin.post("/admin/invalidate", json={"tenant": "alpha", "namespace": ns}).json()
    assert result["deleted"] == 1
    assert post(gateway, "How tall is Mount Everest?", ns, headers={"cache-control": "no-store"}) \
        .headers["x-semcache"] == "miss"
    assert post(gateway, "How tall is Mount Everest?", ns + "x").headers["x-semcache"] == "hit"
    bad = post(gateway, "x", "no/slashes")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-semcache-namespace"


def test_matching_can_only_be_made_stricter(gateway: GatewayProcess, ns: str) -> None:
    stored(gateway, "What is the capital of Japan?", ns)
    assert post(gateway, "what's the capital of japan", ns).headers["x-semcache"] == "hit"
    strict = post(gateway, "what's the capital of japan", ns, headers={"x-semcache-threshold": "0.99"})
    assert strict.headers["x-semcache"] == "miss"  # the paraphrase's cosine is about 0.90
    looser = post(gateway, "x", ns, tenant="beta", headers={"x-semcache-max-wrong-rate": "loose"})
    assert looser.status_code == 400 and "stricter" in looser.json()["error"]["message"]
    assert post(gateway, "x", ns, headers={"x-semcache-max-wrong-rate": "strict"}).status_code == 200
    assert post(gateway, "x", ns, headers={"x-semcache-threshold": "2"}).status_code == 400


def test_sampled_requests_bypass_the_cache(gateway: GatewayProcess, ns: str) -> None:
    first = post(gateway, "Invent a name for a cat.", ns, temperature=0.9)
    second = post(gateway, "Invent a name for a cat.", ns, temperature=0.9)
    assert first.headers["x-semcache"] == second.headers["x-semcache"] == "bypass"


def test_upstream_errors_pass_through_and_are_never_cached(
    gateway: GatewayProcess, upstream: FakeOpenAIServer, ns: str
) -> None:
    before = upstream.count("chat.completions")
    for _ in range(2):
        response = post(gateway, "Please fail [[error:503]]", ns)
        assert response.status_code == 503
        assert "error" in response.json()
    assert upstream.count("chat.completions") == before + 2


def test_an_upstream_timeout_is_a_504(gateway: GatewayProcess, ns: str) -> None:
    response = post(gateway, "Anything at all", ns, model="slow-model")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [7]}', "messages[0]"),
        (b'{"model": "gpt-4o-mini", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}', "stream"),
    ],
)
def test_bad_input_is_a_clear_400_and_stores_nothing(gateway: GatewayProcess, body: bytes, param: str | None) -> None:
    entries = gateway.stats()["cache"]["entries"]
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=body,
                          headers={"authorization": f"Bearer {gateway.keys['alpha']}",
                                   "content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert gateway.stats()["cache"]["entries"] == entries
    assert httpx.get(f"{gateway.root}/healthz").status_code == 200


def test_a_body_over_the_limit_is_a_413_and_an_unknown_model_a_404(gateway: GatewayProcess, ns: str) -> None:
    huge = post(gateway, "x" * 70_000, ns)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    unknown = post(gateway, "hello", ns, model="no-such-model")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_a_tenant_reports_a_wrong_hit_by_its_key(gateway: GatewayProcess, ns: str) -> None:
    key = stored(gateway, "How many moons does Mars have?", ns).headers["x-semcache-key"]
    other = httpx.post(f"{gateway.base_url}/semcache/feedback", json={"key": key},
                       headers={"authorization": f"Bearer {gateway.keys['beta']}"})
    assert other.status_code == 404  # another tenant's entry: not found, and not deleted
    assert post(gateway, "How many moons does Mars have?", ns).headers["x-semcache"] == "hit"
    reports = gateway.stats()["totals"]["wrong_hit_reports"]
    mine = httpx.post(f"{gateway.base_url}/semcache/feedback", json={"key": key},
                      headers={"authorization": f"Bearer {gateway.keys['alpha']}"})
    assert mine.json() == {"key": key, "deleted": True}
    assert gateway.stats()["totals"]["wrong_hit_reports"] == reports + 1
    assert post(gateway, "How many moons does Mars have?", ns, headers={"cache-control": "no-store"}) \
        .headers["x-semcache"] == "miss"


def test_admin_endpoints_need_the_admin_key_and_metrics_count(gateway: GatewayProcess, ns: str) -> None:
    for path in ("/admin/stats", "/admin/recent", "/metrics"):
        assert httpx.get(f"{gateway.root}{path}").status_code == 401
        tenant = httpx.get(f"{gateway.root}{path}", headers={"authorization": f"Bearer {gateway.keys['alpha']}"})
        assert tenant.status_code == 401
    stored(gateway, "What is the boiling point of water?", ns)
    with gateway.admin() as admin:
        metrics = admin.get("/metrics").text
        recent = admin.get("/admin/recent").json()["recent_hits"]
    assert 'semcache_gateway_hits_total{kind="exact",model="gpt-4o-mini",tenant="alpha"}' in metrics
    assert "semcache_gateway_lookup_seconds_bucket" in metrics
    assert "semcache_gateway_cache_entries" in metrics
    assert "semcache_cache_lookups_total" in metrics  # the cache's own counters (semcache.metrics)
    assert any(h["prompt"] == "What is the boiling point of water?" for h in recent)
    ready = httpx.get(f"{gateway.root}/readyz", timeout=30)
    checks = ready.json()["checks"]
    assert checks["cache"] is True and checks["upstream:fast"] is True
    assert ready.status_code == (200 if all(checks.values()) else 503)


def test_invalidate_by_key_prefix_and_by_tenant(gateway: GatewayProcess, ns: str) -> None:
    key = stored(gateway, "What is the speed of light?", ns).headers["x-semcache-key"]
    stored(gateway, "What is the speed of sound?", ns)
    stored(gateway, "What is the speed of light?", ns, tenant="beta")
    with gateway.admin() as admin:
        assert admin.post("/admin/invalidate", json={"key_prefix": key}).json()["deleted"] == 1
        assert admin.post("/admin/invalidate", json={"key_prefix": "not-gw"}).status_code == 400
        assert admin.post("/admin/invalidate", json={"tenant": "a.b"}).status_code == 400
    assert post(gateway, "What is the speed of sound?", ns).headers["x-semcache"] == "hit"
    with gateway.admin() as admin:
        assert admin.post("/admin/invalidate", json={"tenant": "alpha"}).json()["deleted"] >= 1
    assert post(gateway, "What is the speed of sound?", ns, headers={"cache-control": "no-store"}) \
        .headers["x-semcache"] == "miss"
    assert post(gateway, "What is the speed of light?", ns, tenant="beta").headers["x-semcache"] == "hit"
