"""The ``centrum`` command line: one module per command group, each with a ``register(subparsers)``.

Commands: ``train``, ``evaluate``, ``embed``, ``index build|search``, ``search``, ``study``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module name -> registers its subcommand(s); imported lazily so that `centrum --help` stays fast
COMMAND_MODULES = ("train", "evaluate", "embed", "index", "search", "study")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="centrum", description="Image retrieval by deep metric learning (CTL, Symmetrical Synthesis)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"centrum.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``centrum`` command: parse ``argv`` and run the chosen command.

    A ``ValueError`` or ``FileNotFoundError`` (bad input) prints its message and exits with status 2
    instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"centrum {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
