"""``semcache serve``: an OpenAI-compatible caching gateway (Starlette on uvicorn, httpx upstream).

Layers, in the order a request meets them: :mod:`.config` (the TOML file),
:mod:`.auth` (keys to tenants), :mod:`.requests` (body and headers to a plan),
:mod:`.caching` (the cache's per-tenant views), :mod:`.upstream` (the
providers), :mod:`.metrics` (Prometheus and the dashboard's tallies),
:mod:`.state` (what every endpoint shares), :mod:`.serving` (the cached
endpoints and the pass-through), :mod:`.admin` (health, metrics, admin,
feedback, dashboard), :mod:`.app` (the routes) and :mod:`.server` (uvicorn, the demo).
"""
