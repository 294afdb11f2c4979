"""The ``centrum`` command line: one module per command group, each with a ``register(subparsers)``.

Commands: ``train``, ``evaluate``, ``embed``, ``index build|search``, ``search``, ``study``, ``export``, ``serve``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module name -> registers its subcommand(s); imported lazily so that `centrum --help` stays fast
COMMAND_MODULES = ("train", "evaluate", "embed", "index", "search", "study", "export", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command module's subcommands registered."""
    from centrum import __version__

    parser = argparse.ArgumentParser(
        prog="centrum",
        description="Image retrieval by deep metric learning (CTL, Symmetrical Synthesis).",
        epilog="example: centrum train configs/fashion_mnist_ctl.yaml, then centrum evaluate --checkpoint "
        "runs/<name>/model.ckpt; `centrum COMMAND --help` shows each command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"centrum {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"centrum.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``centrum`` command: parse ``argv`` and run the chosen command.

    A ``ValueError`` or ``FileNotFoundError`` (bad input), or an ``OSError`` of the file system (a folder that
    cannot be written, a full disk), prints a one-line message and exits with status 2 instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"centrum {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"centrum {args.command}: error: {one_line(exc.strerror or str(exc))}{where}", file=sys.stderr)
        return 2


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined with "; " (a long list is cut after 400 characters)."""
    text = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or "failed"
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
