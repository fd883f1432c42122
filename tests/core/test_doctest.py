"""Every docstring example in the semcache package runs and shows what it claims."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import semcache

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(semcache.__path__, prefix="semcache.")
    if not info.name.endswith("__main__")
)


# Core modules whose docstrings must keep at least one runnable example.
WITH_EXAMPLES = {f"semcache.{m}" for m in ("kv", "cache", "state", "embeddings", "commands", "index", "eviction")}


def test_the_package_has_modules_to_check():
    assert {"semcache.kv", "semcache.cache", "semcache.state", "semcache.embeddings"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} lost its examples"
