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
WITH_EXAMPLES = {
    "semcache._engine.kv", "semcache._cache.cache", "semcache._engine.state", "semcache.embeddings",
    "semcache._engine.commands", "semcache._engine.index", "semcache._engine.eviction",
}


def test_the_package_has_modules_to_check():
    assert set(MODULES) >= WITH_EXAMPLES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} lost its examples"
