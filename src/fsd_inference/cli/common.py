"""What the sub-commands share: messages, common options, result checks, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fsd_inference.cli import arguments
from fsd_inference.constants import DEFAULT_DTYPE, DTYPES
from fsd_inference.model.tsv import atomic_path, read_categories

EXIT_MISMATCH = 3


def say(message: str) -> None:
    """A progress or context line for people: stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="network folder (n<N>-l<k>.tsv files) or .fsdm bundle")
    parser.add_argument("--bias", type=arguments.finite_float, default=None,
                        help="bias added to nonzeros (default by N: 1024 -0.3, 4096 -0.35, "
                             "16384 -0.4, 65536 -0.45)")


def add_compute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help=f"arithmetic and wire dtype (default {DEFAULT_DTYPE})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_strategy_options(parser: argparse.ArgumentParser, default: str) -> None:
    """How to distribute (strategy/compile.py); ``--workers`` counts the tasks."""
    from fsd_inference.strategy import STRATEGIES

    parser.add_argument("--strategy", default=default, choices=STRATEGIES,
                        help=f"neuron: split every layer, exchange every layer; data: split "
                             f"the rows, no exchange; pipeline: stages of layers streaming "
                             f"micro-batches; hybrid: combinations (default {default})")
    parser.add_argument("--stages", type=arguments.positive_int,
                        help="pipeline stages (pipeline, hybrid)")
    parser.add_argument("--groups", type=arguments.positive_int, help="row groups (hybrid)")
    parser.add_argument("--microbatches", type=arguments.positive_int,
                        help="row slices streamed through the stages (default 4 per stage)")


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


def write_json(document: object, path: str | None, what: str = "metrics") -> None:
    """Write ``document`` atomically to ``path`` (nothing when ``path`` is None)."""
    if path:
        with atomic_path(Path(path)) as temporary:
            temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print(f"{what} written to {path}")
