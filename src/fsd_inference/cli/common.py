"""What the sub-commands share: messages, parent parsers of common options, help
layout, result checks and JSON output.

Options used by several commands are defined once, in the ``add_*_options`` functions,
and reach each command through a parent parser (``model_options()``, ...), under a
titled group of its ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np

from fsd_inference.cli import arguments
from fsd_inference.constants import DEFAULT_DTYPE, DTYPES, ENV_KERNEL, ENV_THREADS
from fsd_inference.model.tsv import read_categories
from fsd_inference.output import STDOUT, write_json

EXIT_MISMATCH = 3
Container: TypeAlias = argparse._ActionsContainer
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = ["EXIT_MISMATCH", "STDOUT", "HelpFormatter", "add_command", "add_kernel_options",
           "add_strategy_options",
           "categories_written",
           "check_expected", "compute_options", "json_options", "model_options", "say",
           "write_json"]


def say(message: str) -> None:
    """A progress or context line for people: stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


class HelpFormatter(argparse.HelpFormatter):
    """Fills each paragraph of a description to the terminal's width; keeps paragraphs
    with indented lines (the examples) line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            paragraph if any(line.startswith("  ") for line in paragraph.splitlines())
            else super(HelpFormatter, self)._fill_text(paragraph, width, indent)
            for paragraph in paragraphs)


def add_command(sub: Subparsers, name: str, *, summary: str, description: str,
                examples: Sequence[str], parents: Sequence[argparse.ArgumentParser] = ()
                ) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` has a description and worked examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          parents=list(parents),
                          formatter_class=HelpFormatter)


def _parent(title: str) -> tuple[argparse.ArgumentParser, Container]:
    parser = argparse.ArgumentParser(add_help=False)
    return parser, parser.add_argument_group(title)


def add_model_options(parser: Container, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="network folder (n<N>-l<k>.tsv files) or .fsdm bundle")
    parser.add_argument("--bias", type=arguments.finite_float, default=None,
                        help="bias added to nonzeros (default by N: 1024 -0.3, 4096 -0.35, "
                             "16384 -0.4, 65536 -0.45)")


def add_compute_options(parser: Container) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help=f"arithmetic and wire dtype (default {DEFAULT_DTYPE})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_strategy_options(parser: Container, default: str | None, auto: bool = False,
                         default_text: str | None = None) -> None:
    """How to distribute (strategy/compile.py); ``--workers`` counts the tasks. ``auto``:
    offer the planner's choice, and its ``--objective`` (fsd infer resolves it before the
    run starts, cli/planning.py; fsd run sends it to the Plan step, cloud/auto_plan.py)."""
    from fsd_inference.constants import OBJECTIVES
    from fsd_inference.strategy import AUTO, STRATEGIES

    choices = (*STRATEGIES, AUTO) if auto else STRATEGIES
    planner = ("; auto: the plan fsd plan --objective cost chooses, with at most --workers "
               "tasks" if auto else "")
    parser.add_argument("--strategy", default=default, choices=choices,
                        help=f"neuron: split every layer, exchange every layer; data: split "
                             f"the rows, no exchange; pipeline: stages of layers streaming "
                             f"micro-batches; hybrid: combinations{planner} (default "
                             f"{default_text or default})")
    if auto:
        parser.add_argument("--objective", choices=OBJECTIVES,
                            help="with --strategy auto: what the planner minimises, predicted "
                                 "on AWS (default cost)")
    parser.add_argument("--stages", type=arguments.positive_int,
                        help="pipeline stages (pipeline, hybrid)")
    parser.add_argument("--groups", type=arguments.positive_int, help="row groups (hybrid)")
    parser.add_argument("--microbatches", type=arguments.positive_int,
                        help="row parts: a pipeline streams them through its stages (default "
                             "4 per stage); inside a stage, part c is sent while part c + 1 "
                             "is computed (default 1)")


def add_kernel_options(parser: Container, workers: bool = False) -> None:
    """--threads and --kernel, for the commands that compute layers in local processes."""
    from fsd_inference.kernel import KERNELS

    share = " per worker" if workers else ""
    cpus = "the CPUs available divided among the workers" if workers else "the CPUs available"
    parser.add_argument("--threads", type=arguments.positive_int, default=None,
                        help=f"layer kernel threads{share} (default ${ENV_THREADS}, else {cpus})")
    parser.add_argument("--kernel", choices=["auto", *sorted(KERNELS)], default=None,
                        help=f"layer kernel (default ${ENV_KERNEL}, else auto: the compiled "
                             f"fused kernel when it is built, SciPy otherwise)")


def add_json_option(parser: Container, what: str, alias: str | None = None) -> None:
    names = ["--json", *([alias] if alias else [])]
    old = f"; {alias} is the same option under its older name" if alias else ""
    parser.add_argument(*names, dest="json", metavar="FILE",
                        help=f"write {what} as JSON to FILE; '-' writes it to stdout and "
                             f"everything else to stderr{old}")


def model_options(required: bool = True) -> argparse.ArgumentParser:
    parser, group = _parent("model")
    add_model_options(group, required)
    return parser


def compute_options() -> argparse.ArgumentParser:
    parser, group = _parent("computation")
    add_compute_options(group)
    return parser


def json_options(what: str, alias: str | None = None) -> argparse.ArgumentParser:
    parser, group = _parent("machine-readable output")
    add_json_option(group, what, alias)
    return parser


def categories_written(path: str | Path) -> None:
    """Say where the categories went, as a path that works from anywhere."""
    print(f"categories written to {Path(path).resolve()}")


def check_expected(categories: np.ndarray, expected_path: str | None) -> int:
    """0 when ``categories`` equal the file's (or no file), else EXIT_MISMATCH."""
    if not expected_path:
        return 0
    expected = read_categories(expected_path)
    if np.array_equal(categories, expected):
        print(f"match: identical to {expected_path}")
        return 0
    missing = np.setdiff1d(expected, categories)
    extra = np.setdiff1d(categories, expected)
    print(f"MISMATCH against {expected_path}: {missing.size} missing, {extra.size} extra "
          f"(first: {[*missing[:5], *extra[:5]]})")
    return EXIT_MISMATCH
