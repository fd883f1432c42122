"""Setting an adapter up: the checks both share, a decorated function with no prompt, missing extras."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from semcache.integrations.langchain import LangChainSemanticCache
from semcache.integrations.openai import OpenAICache, semantic_cache

from semcache import SemanticCache, SemanticKV
from semcache.errors import ConfigurationError, InvalidInputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(hash_embedding):
    with SemanticCache(SemanticKV(embedding=hash_embedding)) as cache:
        yield cache


@pytest.mark.parametrize("make", [OpenAICache, LangChainSemanticCache], ids=["openai", "langchain"])
def test_both_adapters_check_their_arguments_alike(make):
    for threshold in (2, -0.1, float("nan"), True, "high"):
        with pytest.raises(InvalidInputError, match=r"threshold must be a number in \[0, 1\]"):
            make(threshold=threshold)
    with pytest.raises(ConfigurationError, match="cache must be a SemanticCache or None, got str"):
        make("./some-dir")
    assert make(threshold=0).threshold == 0.0 and make().threshold is None


def test_a_function_with_no_str_argument_bypasses_with_one_warning(cache, caplog):
    calls = []

    @semantic_cache(cache=cache, write_behind=False)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    with caplog.at_level(logging.WARNING, logger="semcache.integrations.openai"):
        assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 3, 4] and square.semcache.stats.bypassed == 3
    (warning,) = [r.getMessage() for r in caplog.records if "prompt" in r.getMessage()]
    assert "square" in warning and "prompt_arg=" in warning


def test_a_signature_that_can_never_carry_a_prompt_is_refused_at_decoration(cache):
    def nothing() -> str:
        return "x"

    def method(self) -> str:
        return "x"

    def ask(question: str, model: str = "m") -> str:
        return question

    with pytest.raises(ConfigurationError, match="no argument that could hold the prompt"):
        semantic_cache(nothing, cache=cache)
    with pytest.raises(ConfigurationError, match="no argument that could hold the prompt"):
        semantic_cache(method, cache=cache)  # self is excluded from the request
    with pytest.raises(ConfigurationError, match=r"prompt_arg='query' is not one of its parameters"):
        semantic_cache(ask, cache=cache, prompt_arg="query")
    with pytest.raises(ConfigurationError, match=r"prompt_arg='question' is also in exclude_args"):
        semantic_cache(ask, cache=cache, prompt_arg="question", exclude_args=("question",))


def test_keyword_arguments_may_still_carry_the_prompt(cache):
    @semantic_cache(cache=cache, write_behind=False, prompt_arg="question")
    def ask(**request: str) -> str:
        return f"answer to {request['question']}"

    assert ask(question="What is semcache?") == ask(question="What is semcache?")
    assert ask.semcache.stats.hits == 1


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(
    ("missing", "adapter", "extra"),
    [("openai", "openai", "openai"), ("langchain_core", "langchain", "langchain")],
)
def test_a_missing_extra_names_the_install_command(missing, adapter, extra):
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # as if it were not installed\n"
        "from semcache.errors import MissingDependencyError\n"
        "try:\n"
        f"    import semcache.integrations.{adapter}\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'semcache-llm[{extra}]'" in result.stdout
    assert f"semcache.integrations.{adapter}" in result.stdout


def test_the_test_server_does_not_import_the_adapters():
    """The bundled server chunks its streams itself: the adapter is checked against it, not against itself."""
    result = _run(
        "import sys, semcache.testing\nprint(sorted(m for m in sys.modules if m.startswith('semcache.integrations')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
