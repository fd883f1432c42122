"""docs/reference/dependencies.md says why each dependency of pyproject.toml is there."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?")  # "mkdocstrings[python]>=0.26" -> its name


def requirement_names() -> set[str]:
    """The name (with its extras) of every requirement, base and extras, but semcache-llm's own extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    requirements = [*project["dependencies"], *(requirement for extra in extras for requirement in extra)]
    names = {match[0] for match in map(REQUIREMENT_NAME.match, requirements) if match}
    return {name for name in names if not name.startswith(f"{project['name']}[")}


def test_every_dependency_is_explained():
    page = (ROOT / "docs" / "reference" / "dependencies.md").read_text(encoding="utf-8")
    names = requirement_names()
    assert {"numpy", "pysyncobj", "mktestdocs"} <= names
    missing = sorted(name for name in names if f"| `{name}` |" not in page)
    assert not missing, f"not explained in docs/reference/dependencies.md: {missing}"
