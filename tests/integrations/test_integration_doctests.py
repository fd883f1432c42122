"""The examples in the adapters' docstrings run (and the bundled server's)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "semcache.integrations._adapter",
    "semcache.integrations._conversation",
    "semcache.integrations._memo",
    "semcache.integrations._writes",
    "semcache.integrations.langchain",
    "semcache.integrations.openai",
    "semcache.integrations.openai._answers",
    "semcache.integrations.openai._plan",
    "semcache.integrations.openai._shapes",
    "semcache.integrations.openai._streams",
    "semcache.integrations.openai._wrap",
    "semcache.testing.openai_server",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
