"""Griffe extensions for the docs build (mkdocs.yml loads them for mkdocstrings).

* :class:`IntegrationsUnderSemcache`: read ``integrations/`` as
  ``semcache.integrations``.  The adapters live in ``integrations/`` at the top
  of the repository and are installed as ``semcache.integrations``
  (``package-dir`` in pyproject.toml).  griffe reads the source checkout, where
  ``semcache/`` has no ``integrations`` folder (developers' worktrees add a
  git-excluded symlink; a fresh clone, as in CI, has none).  So once griffe has
  loaded the ``semcache`` package, this visits ``integrations/`` and attaches
  it under it, statically, as griffe would have: no import, nothing written to
  the checkout.
* :class:`DocstringsAsMarkdown`: the docstrings are written for doctest and
  Sphinx as much as for Markdown.  Sphinx roles
  (``:class:`~semcache.errors.ClosedError```), which Markdown would print as
  they are, become inline code (``ClosedError``): many of the objects they
  name are private and have no page a link could point to.  A doctest outside
  an ``Examples:`` section (``>>>`` lines and their output, up to a blank
  line), which Markdown would read as nested quotes, becomes a ``pycon`` code
  block.  Only the text mkdocstrings renders changes; the source is untouched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

INTEGRATIONS = Path(__file__).resolve().parents[2] / "integrations"
SPHINX_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")


class IntegrationsUnderSemcache(griffe.Extension):
    """Attach ``integrations/`` (its modules and subpackages) to the loaded ``semcache`` package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "semcache" or "integrations" in pkg.members:
            return  # another package, or a worktree whose symlink griffe already followed
        _attach_package("integrations", INTEGRATIONS, pkg, loader)


def _attach_package(name: str, folder: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> None:
    """Attach the package in ``folder`` under ``parent``, then its modules and subpackages under it."""
    package = _attach(name, folder / "__init__.py", parent, loader)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.name != "__init__.py":
            _attach(path.stem, path, package, loader)
        elif path.is_dir() and (path / "__init__.py").is_file():
            _attach_package(path.name, path, package, loader)


class DocstringsAsMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded ``semcache`` package: roles as inline code, doctests as code blocks."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name == "semcache":
            _rewrite_docstrings(pkg, set())


def _attach(name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    module = griffe.visit(
        name,
        path,
        path.read_text(encoding="utf-8"),
        parent=parent,
        docstring_parser=loader.docstring_parser,
        docstring_options=loader.docstring_options,
        lines_collection=loader.lines_collection,
        modules_collection=loader.modules_collection,
    )
    parent.set_member(name, module)
    loader.expand_exports(module)
    return module


def as_code(match: re.Match[str]) -> str:
    """``:class:`~a.b.C``` -> ```C```; ``:func:`f``` -> ```f```."""
    target = match["target"]
    return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"


def fence_doctests(text: str) -> str:
    """Put each unindented doctest run (``>>>`` up to a blank line) of ``text`` in a ``pycon`` fence.

    Indented ones are left alone: they belong to a section (``Examples:``) that griffe parses itself.
    """
    lines, out, inside = text.split("\n"), [], False
    for line in lines:
        if not inside and line.startswith(">>> "):
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


def _rewrite_docstrings(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = fence_doctests(SPHINX_ROLE.sub(as_code, obj.docstring.value))
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_docstrings(member, seen)  # type: ignore[arg-type]
