"""The ``ganfuse`` command line: argument parsing and wiring only.

Each sub-module of this package that defines ``register(subparsers)`` adds its commands; they are
discovered automatically so that a new command is one new file. A command's handler is stored as
``func`` in its parser defaults and receives the parsed ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ganfuse import __version__
from ganfuse.errors import UserError


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in descriptions as written and shows defaults."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganfuse",
        description="GAN image generation and multimodal image-text learning.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"ganfuse {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def add_command(subparsers, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` ends with a usage example."""
    return subparsers.add_parser(
        name,
        help=help,
        description=f"{help}\n\nexample:\n  {example}",
        formatter_class=_Formatter,
    )


def _setup_logging() -> None:
    logger = logging.getLogger("ganfuse")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ganfuse: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # for commands that relaunch themselves
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"ganfuse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganfuse: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def entry_point() -> None:
    sys.exit(main())
