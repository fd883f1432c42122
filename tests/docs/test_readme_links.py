"""README.md's links into the repository resolve: mkdocs checks the site's links, not the README's."""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#+\s+(?P<title>.+?)\s*$", re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page, as mkdocs' toc extension makes them."""
    return {slugify(re.sub(r"[`*]", "", match["title"]), "-") for match in HEADING.finditer(page.read_text())}


def test_readme_links_resolve():
    targets = [match["target"] for match in LINK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))]
    local = [target for target in targets if "://" not in target]
    assert len(local) >= 10
    for target in local:
        path, _, anchor = target.partition("#")
        page = ROOT / path
        assert page.is_file(), f"README.md links to {path}, which does not exist"
        assert not anchor or anchor in anchors(page), f"README.md links to {target}: no such heading"
