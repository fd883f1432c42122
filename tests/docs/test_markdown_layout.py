"""The docs' Markdown nests the way Python-Markdown (mkdocs) reads it, not only the way GitHub does.

Python-Markdown nests a list, a table, a fence or a paragraph inside a list
item only when it is indented by 4 spaces, and starts a list or a table only
after a blank line.  Written GitHub-style (2 spaces, no blank line) such
Markdown builds without a warning but renders as run-on text, so it is
checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
ITEM = re.compile(r"^([-*+]|\d+\.) ")
FENCE = re.compile(r"^\s*```")


def layout_problems(text: str) -> list[str]:
    """Lines that Python-Markdown would not nest, or would not start as a block, as written."""
    problems, inside, previous = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside and line.strip():
            indent = len(line) - len(line.lstrip(" "))
            body = line[indent:]
            if 0 < indent < 4 and (not previous.strip() or ITEM.match(body) or body.startswith("|")):
                problems.append(f"line {number}: nested by {indent} spaces (Python-Markdown needs 4)")
            if indent == 0 and previous.strip() and body.startswith("|") and not previous.startswith("|"):
                problems.append(f"line {number}: a table needs a blank line before it")
        previous = line
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_nesting_is_four_spaces(page: Path):
    assert not layout_problems(page.read_text(encoding="utf-8"))


def test_the_check_catches_github_style_nesting():
    assert layout_problems("- item\n\n  a nested paragraph\n") == [
        "line 3: nested by 2 spaces (Python-Markdown needs 4)"
    ]
    assert layout_problems("- item\n  - sub-item\n")
    assert not layout_problems("- item\n  continued lazily\n\n    a nested paragraph\n")
