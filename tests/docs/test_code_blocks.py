"""The code in the docs runs: every ```python block of README.md and docs/**/*.md, as a test.

Blocks are found with mktestdocs (``grab_code_blocks``).  The blocks of one page
run in order in one namespace, so a later block may use what an earlier one
made, as a reader would; each page runs in a fresh temporary directory, so a
block may write ``./cache-data`` and leave nothing in the checkout.  A block
that is not meant to run (a shell command, a cluster file, program output)
uses another fence language: ``bash``, ``toml``, ``json``, ``yaml``, ``text``.  Nothing is skipped:
:func:`test_fences_are_labelled` fails on a fence without a language or with
one the docs do not use, since mktestdocs would pass such a block over.
"""

from __future__ import annotations

import linecache
import re
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# The fence languages the docs use.  Only ``python`` runs; the others are shown, never run.
LANGUAGES = {"python", "bash", "toml", "json", "yaml", "text"}
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>.*)$")


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks(page: Path) -> list[str]:
    return grab_code_blocks(page.read_text(encoding="utf-8"), lang="python")


def fence_languages(text: str) -> list[str]:
    """The language of every opening fence, in order (``""`` for none)."""
    languages, inside = [], False
    for line in text.splitlines():
        match = FENCE.match(line)
        if match is None:
            continue
        if not inside:
            languages.append(match["info"].strip())
        inside = not inside
    assert not inside, "a fence is never closed"
    return languages


def test_the_docs_are_found():
    names = {page_id(page) for page in PAGES}
    assert "README.md" in names and "docs/index.md" in names
    assert sum(bool(python_blocks(page)) for page in PAGES) >= 5


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_fences_are_labelled(page: Path):
    """Every fence names a known language, and mktestdocs sees exactly the ``python`` ones."""
    text = page.read_text(encoding="utf-8")
    stray = [n for n, line in enumerate(text.splitlines(), 1) if "```" in line and not FENCE.match(line)]
    assert not stray, f"``` inside a line (not a fence) at lines {stray}: mktestdocs would split blocks there"
    languages = fence_languages(text)
    assert set(languages) <= LANGUAGES, f"fences in {sorted(set(languages) - LANGUAGES)}: use one of {LANGUAGES}"
    assert languages.count("python") == len(python_blocks(page))


@pytest.mark.model
@pytest.mark.parametrize("page", [page for page in PAGES if python_blocks(page)], ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, block in enumerate(python_blocks(page), 1):
        name = f"{page_id(page)}, python block {number}"
        # Registered with linecache, so a failure's traceback shows the block's lines.
        linecache.cache[name] = (len(block), None, block.splitlines(keepends=True), name)
        exec(compile(block, name, "exec"), namespace)  # noqa: S102
