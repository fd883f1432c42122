"""Every example runs offline (no OPENAI_API_KEY: the bundled server) and prints what the docs show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Per example: the outcome words its lines print, in order, and its upstream call count.
EXPECTED = {
    "openai_decorator.py": (["MISS", "HIT", "MISS", "MISS", "HIT", "HIT"], 3),
    "langchain_chat.py": (["MISS", "HIT", "MISS", "MISS", "MISS", "HIT"], 4),
    "semantic_kv.py": (["MISS", "HIT", "MISS"], 2),
}


def run_example(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_llm_example_is_run_here():
    """Every example that talks to an LLM (through ``openai_endpoint``) is in EXPECTED.

    The cluster quickstart, which starts node processes, is the cluster tests' to run.
    """
    llm_examples = {p.name for p in EXAMPLES.glob("*.py") if "openai_endpoint" in p.read_text(encoding="utf-8")}
    assert llm_examples == set(EXPECTED)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_offline(name):
    output = run_example(name)
    outcomes, calls = EXPECTED[name]
    assert any(line.startswith("[offline] no OPENAI_API_KEY") for line in output.splitlines())
    assert re.findall(r"\b(HIT|MISS)\b", output) == outcomes
    assert f"upstream calls: {calls}" in output
    if name == "semantic_kv.py":  # the seed's quickstart, embedded
        assert "get doc:readme -> b'How to install and configure the system'" in output
        first_search = next(line for line in output.splitlines() if line.startswith("search "))
        assert "doc:api" in first_search  # "set up authentication" finds the API doc by meaning
        assert "exists config:host -> True" in output and "after delete, exists -> False" in output
