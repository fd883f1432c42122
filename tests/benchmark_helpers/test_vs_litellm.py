"""The LiteLLM comparison's own parts: payloads, configs, reading answers, percentiles, tables, arguments.

No test here starts LiteLLM or a gateway; one starts a plain Python child to check that a process the
benchmark started is stopped even when it ignores SIGTERM.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import vs_litellm as bench
from semcache._gateway.config import GatewayConfig, hash_key


def samples(latencies_ms: list[float], *, wall: float = 1.0, outcomes: dict[str, int] | None = None,
            upstream_calls: int = 0, server_cpu: float = 0.0, semantic_ms: list[float] | None = None) -> bench.Samples:
    return bench.Samples([x / 1e3 for x in latencies_ms], wall, Counter(outcomes or {}), upstream_calls,
                         [x / 1e3 for x in semantic_ms or []], server_cpu)


def test_every_contender_gets_the_same_cacheable_body():
    assert bench.chat_body("Hi?") == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi?"}]}
    assert "temperature" not in bench.chat_body("Hi?")  # unset: both gateways cache it


def test_fresh_prompts_are_distinct_repeatable_and_never_a_cached_prompt():
    prompts = bench.fresh_prompts(500)
    assert len(set(prompts)) == 500 and prompts == bench.fresh_prompts(500)
    assert bench.fresh_prompts(5, seed=1) != bench.fresh_prompts(5, seed=2)
    assert not set(prompts) & set(bench.CACHED) and not set(prompts) & set(bench.PARAPHRASES)


def test_the_litellm_config_turns_its_in_memory_cache_on_in_front_of_the_upstream():
    config = json.loads(bench.litellm_config("http://127.0.0.1:9/v1", "sk-master"))  # JSON is YAML to its loader
    (model,) = config["model_list"]
    assert model["model_name"] == "gpt-4o-mini"
    assert model["litellm_params"] == {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1",
                                       "api_key": "fake"}
    assert config["litellm_settings"]["cache"] is True
    assert config["litellm_settings"]["cache_params"]["type"] == "local"
    assert config["general_settings"]["master_key"] == "sk-master"


@pytest.mark.parametrize("embedding", [None, "hash:384"])
def test_the_semcache_config_loads_as_a_gateway_config(embedding):
    text = bench.semcache_config("http://127.0.0.1:9/v1", hash_key("sk-bench"), embedding, hash_key("sk-admin"))
    config = GatewayConfig.from_dict(tomllib.loads(text))
    assert config.server.port == 0 and config.server.host == "127.0.0.1"
    assert config.server.admin_key_hashes == (hash_key("sk-admin"),)
    assert config.upstream_for("gpt-4o-mini").base_url == "http://127.0.0.1:9/v1"
    assert config.tenants[0].key_hashes == (hash_key("sk-bench"),)
    assert config.cache.embedding == embedding and config.cache.path is None


def test_answers_are_read_as_exact_hits_semantic_hits_or_misses():
    assert bench.semcache_outcome({"x-semcache": "hit", "x-semcache-similarity": "1.000000"}) == "exact"
    assert bench.semcache_outcome({"x-semcache": "hit", "x-semcache-similarity": "0.912345"}) == "semantic"
    assert bench.semcache_outcome({"x-semcache": "miss"}) == "miss"
    assert bench.semcache_outcome({}) == "miss"
    assert bench.litellm_outcome({"x-litellm-cache-key": "b23b"}) == "exact"
    assert bench.litellm_outcome({"x-litellm-version": "1.0"}) == "miss"
    assert bench.direct_outcome({"x-semcache": "hit"}) == "miss"


def test_samples_give_percentiles_throughput_and_cpu_per_request():
    s = samples([float(x) for x in range(1, 101)], wall=2.0, server_cpu=0.05)
    assert s.requests == 100 and s.throughput == 50.0
    assert s.summary().median == pytest.approx(0.0505) and s.summary().p99 == pytest.approx(0.1)
    assert s.cpu_per_request == pytest.approx(0.0005)
    assert bench.Samples().throughput == 0.0 and bench.Samples().cpu_per_request == 0.0


def test_rounds_rotate_who_goes_first():
    names = ["a", "b", "c"]
    assert [bench.rotated(names, step)[0] for step in range(4)] == ["a", "b", "c", "a"]


def test_the_hits_table_shows_each_contender_and_the_ratios_of_this_run():
    by_clients = {1: {bench.SEMCACHE: samples([2.0] * 10, wall=0.5, outcomes={"exact": 10}, server_cpu=0.01),
                      bench.LITELLM: samples([8.0] * 10, wall=1.0, outcomes={"exact": 10}, server_cpu=0.08)}}
    table = bench.hits_table(by_clients, "1.0 before, 1.2 after")
    assert "load average 1.0 before, 1.2 after" in table
    assert "| semcache serve | 1 | 10 | 2.00 | 2.00 | 20 | 1.00 | 0.00 | 10 | 0 |" in table
    assert "| LiteLLM proxy | 1 | 10 | 8.00 | 8.00 | 10 | 8.00 | 0.00 | 10 | 0 |" in table
    assert ("semcache / LiteLLM at 1 client: p50 0.25x, p99 0.25x, throughput 2.00x, server CPU per request "
            "0.12x") in table


def test_the_miss_overhead_is_a_gateways_p50_less_the_direct_calls():
    misses = {bench.DIRECT: samples([1.0, 1.0, 3.0], outcomes={"miss": 3}, upstream_calls=3),
              bench.SEMCACHE: samples([9.0, 10.0, 50.0], outcomes={"miss": 3}, upstream_calls=3),
              bench.LITELLM: samples([4.0, 5.0, 6.0], outcomes={"miss": 3}, upstream_calls=3)}
    assert bench.miss_overheads(misses) == pytest.approx({bench.SEMCACHE: 0.009, bench.LITELLM: 0.004})
    table = bench.misses_table(misses, "0.5")
    assert "| upstream directly | 3 | 1.00 | 3.00 | 3 | 3 | - |" in table
    assert "| semcache serve | 3 | 10.00 | 50.00 | 3 | 3 | 9.00 |" in table


def test_the_paraphrase_table_shows_semantic_hits_beside_litellms_misses():
    table = bench.paraphrase_table({
        bench.SEMCACHE: samples([5.0] * 8, outcomes={"semantic": 7, "miss": 1}, upstream_calls=1,
                                semantic_ms=[4.0] * 7),
        bench.LITELLM: samples([3.0] * 8, outcomes={"miss": 8}, upstream_calls=8),
    }, 1, "0.1")
    assert "| semcache serve | 8 | 7 | 0 | 1 | 1 | 4.00 | 4.00 |" in table
    assert "| LiteLLM proxy | 8 | 0 | 0 | 8 | 8 | - | - |" in table


def test_targets_are_reported_met_or_missed_never_asserted():
    hits = {32: {bench.SEMCACHE: samples([4.0] * 4, wall=1.0), bench.LITELLM: samples([10.0] * 4, wall=3.0)}}
    misses = {bench.DIRECT: samples([1.0]), bench.SEMCACHE: samples([12.0]), bench.LITELLM: samples([2.5]),
              bench.SEMCACHE_NO_MODEL: samples([2.0])}
    table = bench.targets_table(hits, misses)
    assert "| exact-hit p50 <= 0.5x LiteLLM's, 32 client(s) | 0.40x | met |" in table
    assert "| hit throughput >= 2.0x LiteLLM's, 32 client(s) | 3.00x | met |" in table
    assert "| miss overhead <= 2.0 ms p50, semcache serve | 11.00 ms (LiteLLM 1.50 ms) | MISSED |" in table
    assert f"| miss overhead <= 2.0 ms p50, {bench.SEMCACHE_NO_MODEL} | 1.00 ms (LiteLLM 1.50 ms) | met |" in table


EXPOSITION = """\
# HELP semcache_gateway_lookup_seconds Cache lookup time
semcache_gateway_lookup_seconds_bucket{le="0.001",model="gpt-4o-mini",tenant="bench"} 3.0
semcache_gateway_lookup_seconds_count{model="gpt-4o-mini",tenant="bench"} 4.0
semcache_gateway_lookup_seconds_sum{model="gpt-4o-mini",tenant="bench"} 0.02
semcache_gateway_request_seconds_count{model="gpt-4o-mini",outcome="hit",tenant="bench"} 10.0
semcache_gateway_request_seconds_sum{model="gpt-4o-mini",outcome="hit",tenant="bench"} 0.01
semcache_gateway_request_seconds_count{model="gpt-4o-mini",outcome="miss",tenant="bench"} 2.0
semcache_gateway_request_seconds_sum{model="gpt-4o-mini",outcome="miss",tenant="bench"} 0.03
semcache_gateway_request_seconds_count{model="other",outcome="miss",tenant="bench"} 1.0
semcache_gateway_request_seconds_sum{model="other",outcome="miss",tenant="bench"} 0.01
"""


def test_the_gateways_histograms_are_summed_over_the_series_a_phase_is_about():
    assert bench.histogram_totals(EXPOSITION, "semcache_gateway_lookup_seconds", {}) == (0.02, 4.0)
    assert bench.histogram_totals(EXPOSITION, "semcache_gateway_request_seconds", {"outcome": "miss"}) == (
        pytest.approx(0.04), 3.0)
    assert bench.histogram_totals(EXPOSITION, "semcache_gateway_upstream_seconds", {}) == (0.0, 0.0)
    later = EXPOSITION.replace("lookup_seconds_count{model=\"gpt-4o-mini\",tenant=\"bench\"} 4.0",
                               "lookup_seconds_count{model=\"gpt-4o-mini\",tenant=\"bench\"} 8.0").replace(
        "lookup_seconds_sum{model=\"gpt-4o-mini\",tenant=\"bench\"} 0.02",
        "lookup_seconds_sum{model=\"gpt-4o-mini\",tenant=\"bench\"} 0.06")
    means = bench.inside_means(EXPOSITION, later)
    assert means == {"lookup": pytest.approx(0.01), "upstream call": None, "whole miss": None, "whole hit": None}
    table = bench.inside_table({"misses": {"a": means, "idle": dict.fromkeys(means)}})
    assert "| misses | a | 10.00 | - | - | - |" in table and "idle" not in table


def test_arguments_and_their_defaults():
    args = bench.parse_args([])
    assert (args.requests, args.passes, args.upstream, args.embedding) == (2000, 5, "process", None)
    assert args.out == bench.DEFAULT_OUT and args.litellm is None
    args = bench.parse_args(["--litellm", "/x/litellm", "--requests", "300", "--upstream", "thread",
                             "--embedding", "hash:64", "--out", "/tmp/o.txt"])
    assert (args.litellm, args.requests, args.upstream, args.embedding, args.out) == (
        "/x/litellm", 300, "thread", "hash:64", Path("/tmp/o.txt"))
    for bad in (["--requests", "0"], ["--passes", "-1"], ["--upstream", "docker"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_the_report_shows_the_command_without_this_machines_paths():
    shown = bench.shown_command(["--litellm", "/x/bin/litellm", "--requests", "500", "--out=/tmp/o.txt"])
    assert shown == "python benchmarks/vs_litellm.py --requests 500"


def test_without_litellm_it_says_how_to_install_it_and_exits_2(tmp_path, capsys):
    missing = tmp_path / "litellm"
    assert bench.find_litellm(str(missing)) is None
    assert bench.main(["--litellm", str(missing), "--out", str(tmp_path / "out.txt")]) == 2
    assert "pip install 'litellm[proxy]'" in capsys.readouterr().err
    assert not (tmp_path / "out.txt").exists()


def test_a_started_process_is_stopped_even_when_it_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "STOP_SECONDS", 0.5)
    code = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    service = bench.Service("stubborn", [sys.executable, "-c", code], env={}, log=tmp_path / "log")
    service.wait_for_line(bench.re.compile("ready"), 30)
    assert service in bench.RUNNING
    bench.stop_all()
    assert service.process.poll() is not None and service not in bench.RUNNING
