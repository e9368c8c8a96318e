"""What the sub-commands share: messages, common options, result checks, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fsd_inference.constants import DEFAULT_DTYPE, DTYPES, ENV_KERNEL, ENV_THREADS
from fsd_inference.kernel import KERNELS
from fsd_inference.model.tsv import atomic_path, read_categories

EXIT_MISMATCH = 3


def say(message: str) -> None:
    """A progress or context line for people: stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="network folder (n<N>-l<k>.tsv files) or .fsdm bundle")
    parser.add_argument("--bias", type=float, default=None,
                        help="bias added to nonzeros (default by N: 1024 -0.3, 4096 -0.35, "
                             "16384 -0.4, 65536 -0.45)")


def add_compute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help=f"arithmetic and wire dtype (default {DEFAULT_DTYPE})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_kernel_options(parser: argparse.ArgumentParser, workers: bool = False) -> None:
    """--threads and --kernel, for the commands that compute layers in local processes."""
    share = " per worker" if workers else ""
    cpus = "the CPUs available divided among the workers" if workers else "the CPUs available"
    parser.add_argument("--threads", type=int, default=None,
                        help=f"layer kernel threads{share} (default ${ENV_THREADS}, else {cpus})")
    parser.add_argument("--kernel", choices=["auto", *sorted(KERNELS)], default=None,
                        help=f"layer kernel (default ${ENV_KERNEL}, else auto: the compiled "
                             f"fused kernel when it is built, SciPy otherwise)")


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
