"""The ``fsd`` command line. Each sub-command lives in its own module (a thin adapter
over the library) and registers itself through :data:`COMMANDS`, in help order."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fsd_inference import __version__
from fsd_inference.cli import emulator, infer, model, plan, run
from fsd_inference.exceptions import FsdError

# Modules with ``register(subparsers)``; their order is the order of ``fsd --help``.
COMMANDS = (model, plan, infer, run, emulator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsd", description="Serverless distributed inference of sparse DNNs."
    )
    parser.add_argument("--version", action="version", version=f"fsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FsdError as exc:
        print(f"fsd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable or unwritable paths, full disks: the user's to fix
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fsd {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fsd {args.command}: interrupted", file=sys.stderr)
        return 130

