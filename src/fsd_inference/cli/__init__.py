"""The ``fsd`` command line. Each sub-command lives in its own module (a thin adapter
over the library) and registers itself through :data:`COMMANDS`, in help order."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress

from fsd_inference import __version__
from fsd_inference.cli import (
    arguments,
    cleanup,
    emulator,
    infer,
    model,
    plan,
    predict,
    report,
    run,
)
from fsd_inference.cli.common import HelpFormatter
from fsd_inference.exceptions import FsdError
from fsd_inference.kernel.heap import retain_freed_memory
from fsd_inference.output import human_lines_to_stderr

EXIT_BROKEN_PIPE = 141  # as a shell reports a command ended by SIGPIPE
# Modules with ``register(subparsers)``; their order is the order of ``fsd --help``.
COMMANDS = (model, plan, infer, run, predict, report, cleanup, emulator)


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.OneLineParser(
        prog="fsd", formatter_class=HelpFormatter,
        description="Serverless distributed inference of sparse DNNs: the Graph Challenge "
                    "inference split across workers that exchange activations every layer, "
                    "locally or on AWS Lambda + Step Functions.",
        epilog="start with:\n"
               "  fsd run                      the demo: the whole serverless application "
               "on an embedded local AWS\n"
               "  fsd run --json - | jq .summary.totals   the same, metrics on stdout\n"
               "  fsd COMMAND --help           what a command does, its options and "
               "examples")
    parser.add_argument("--version", action="version", version=f"fsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # the commands read, compute and write arrays of tens of MB one after another:
        # reuse freed memory from the start (reading the input churns pages too), not
        # only once a kernel is made
        retain_freed_memory()
        with human_lines_to_stderr(getattr(args, "json", None)):
            return int(args.func(args))
    except FsdError as exc:
        print(f"fsd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader went away (fsd ... | head): nothing to report
        with suppress(OSError, ValueError):  # no more writes to the closed pipe at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # unreadable or unwritable paths, full disks: the user's to fix
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fsd {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fsd {args.command}: interrupted", file=sys.stderr)
        return 130

