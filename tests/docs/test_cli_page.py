"""docs/cli.md documents every command and every option of the ``semcache`` parser."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from semcache._cli.main import build_parser

CLI_PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
Command = tuple[tuple[str, ...], list[str]]  # a command path ("cluster", "up") and its long options


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Command]:
    """Every command of ``parser`` with its long options, depth first."""
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--") and o != "--help"]
    yield path, options
    for action in subcommands:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


def test_every_command_and_option_is_on_the_cli_page():
    page = CLI_PAGE.read_text(encoding="utf-8")
    found = list(commands(build_parser()))
    assert {path for path, _ in found} >= {("demo",), ("cluster", "up"), ("cluster", "remove-replica")}
    for path, options in found:
        if path:
            assert mentioned(" ".join(path), page), f"semcache {' '.join(path)} is not documented"
        for option in options:
            assert mentioned(option, page), f"{' '.join(path) or 'semcache'} {option} is not documented"


def mentioned(words: str, page: str) -> bool:
    """Whether ``words`` open a code span of ``page`` (`` `cluster up` ``, `` `--dir DIR` ``), whole."""
    return re.search(rf"`(semcache )?{re.escape(words)}[ `=]", page) is not None
