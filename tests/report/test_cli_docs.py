"""docs/cli.md documents every command the CLI has, and every command's --help has an example."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganfuse.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """``{"fuse train": parser, ...}`` for every leaf and intermediate sub-command."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                found[full] = sub
                found.update(commands(sub, full + " "))
    return found


def test_every_command_is_in_the_reference_with_an_example():
    text = DOCS.read_text(encoding="utf-8")
    every = commands(build_parser())
    assert {"demo", "report", "serve", "train"} <= set(every)
    missing = [name for name in every if f"ganfuse {name} " not in text]
    assert missing == []
    no_example = [name for name, p in every.items() if "example:" not in (p.description or "")]
    assert no_example == []
