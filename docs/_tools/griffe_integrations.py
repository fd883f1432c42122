"""A griffe extension for the docs build: read ``integrations/`` as ``semcache.integrations``.

The adapters live in ``integrations/`` at the top of the repository and are
installed as ``semcache.integrations`` (``package-dir`` in pyproject.toml).
griffe reads the source checkout, where ``semcache/`` has no ``integrations``
folder (developers' worktrees add a git-excluded symlink; a fresh clone, as in
CI, has none).  So once griffe has loaded the ``semcache`` package, this
extension visits ``integrations/`` and attaches it under it, statically, as
griffe would have: no import, nothing written to the checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

INTEGRATIONS = Path(__file__).resolve().parents[2] / "integrations"


class IntegrationsUnderSemcache(griffe.Extension):
    """Attach ``integrations/*.py`` to the loaded ``semcache`` package as ``semcache.integrations``."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "semcache" or "integrations" in pkg.members:
            return  # another package, or a worktree whose symlink griffe already followed
        package = _attach("integrations", INTEGRATIONS / "__init__.py", pkg, loader)
        for path in sorted(INTEGRATIONS.glob("*.py")):
            if path.name != "__init__.py":
                _attach(path.stem, path, package, loader)


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
