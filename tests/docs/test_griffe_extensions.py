"""The docs build's griffe extensions (docs/_tools/griffe_integrations.py) rewrite docstrings as intended."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "docs" / "_tools" / "griffe_integrations.py"
spec = importlib.util.spec_from_file_location("griffe_integrations", TOOLS)
assert spec is not None and spec.loader is not None
tools = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tools)


def test_sphinx_roles_become_inline_code():
    text = "Raises :class:`~semcache.errors.ClosedError`; see :meth:`SemanticKV.close` and :mod:`semcache.errors`."
    assert tools.SPHINX_ROLE.sub(tools.as_code, text) == (
        "Raises `ClosedError`; see `SemanticKV.close` and `semcache.errors`."
    )


def test_unindented_doctests_are_fenced_and_section_examples_left_alone():
    text = "Intro.\n\n>>> 1 + 1\n2\n\nMore.\n\nExamples:\n    >>> 2 + 2\n    4"
    assert tools.fence_doctests(text) == (
        "Intro.\n\n```pycon\n>>> 1 + 1\n2\n```\n\nMore.\n\nExamples:\n    >>> 2 + 2\n    4"
    )
    assert tools.fence_doctests(">>> x = 1") == "```pycon\n>>> x = 1\n```"


def test_integrations_live_where_the_extension_looks():
    assert (tools.INTEGRATIONS / "__init__.py").is_file() and (tools.INTEGRATIONS / "langchain.py").is_file()
    assert (tools.INTEGRATIONS / "openai" / "__init__.py").is_file()  # a subpackage: attached with its modules
