"""Packaging: a real (non-editable) wheel maps integrations/ to semcache.integrations only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the sources, so the checkout gets no build/ directory."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("semcache", "integrations"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("semcache_llm-*.whl")
    return built


def test_the_wheel_holds_semcache_integrations_and_no_top_level_integrations(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "semcache/__init__.py" in names
    assert "semcache/integrations/__init__.py" in names
    assert "semcache/integrations/openai/__init__.py" in names  # a subpackage: listed in [tool.setuptools] packages
    assert not [n for n in names if n.startswith("integrations/")]
    # Every package of the source tree is in the wheel (one left out of [tool.setuptools] packages would not be),
    # and the verifier's trained parameters are package data.
    sources = sorted(str(init.relative_to(REPO)) for init in (REPO / "semcache").rglob("__init__.py")
                     if "__pycache__" not in init.parts and init.parent.name != "integrations")
    assert [name for name in sources if name not in names] == []
    assert "semcache/_cache/verifier/verifier.npz" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "semcache = semcache._cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_imports_semcache_integrations_but_not_integrations(wheel, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (target / "semcache" / "integrations" / "__init__.py").exists()
    assert not (target / "integrations").exists()
    probe = (
        "import importlib.util, semcache.integrations\n"
        "from semcache._cache.verifier.model import shipped_verifier\n"
        "assert shipped_verifier().operating_points  # the shipped parameters load from the installed package\n"
        "print(semcache.__file__)\n"
        "print(semcache.integrations.__file__)\n"
        "print(importlib.util.find_spec('integrations'))\n"
    )
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=neutral, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    semcache_file, integrations_file, top_level = out.stdout.splitlines()
    assert Path(semcache_file).is_relative_to(target)
    assert Path(integrations_file).is_relative_to(target)
    assert top_level == "None"  # no generic top-level "integrations" module
    failing = subprocess.run(
        [sys.executable, "-c", "import integrations"], cwd=neutral, env=env, capture_output=True, text=True, timeout=300
    )
    assert failing.returncode != 0 and "No module named 'integrations'" in failing.stderr
