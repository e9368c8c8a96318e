"""Validating ``type=`` callables for argparse: every bad number is refused while the
command line is parsed, before any work starts (argparse then prints one
``fsd CMD: error: argument --x: ...`` line and exits 2).

The bounds are the project's (cloud.schema: what a request may ask for) and this
machine's: ``fsd infer`` starts one process per worker, so at most
:func:`local_worker_limit` of them.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from typing import NoReturn

from fsd_inference.cloud.schema import (
    MAX_DEPTH,
    MAX_INDEX,
    MAX_MESSAGE_LIMIT,
    MAX_RECEIVE_TIMEOUT_S,
    MAX_SEED,
    MAX_WORKERS,
    MIN_MESSAGE_LIMIT,
)
from fsd_inference.exceptions import FsdError
from fsd_inference.model.tsv import read_categories

MAX_NEURONS = 1 << 20  # 16 x the largest Graph Challenge network (65,536)
MAX_TIMEOUT_S = 24 * 3600.0
WORKERS_PER_CORE = 64  # local workers mostly wait on each other
WORKER_MEMORY = 128 * 1024 * 1024  # what one idle local worker process needs, at least
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (what every other error is), pointing
    at ``--help`` instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, "
                                             f"got {value:,}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


positive_int = bounded_int(1, MAX_INDEX)
seed = bounded_int(0, MAX_SEED)
neurons = bounded_int(1, MAX_NEURONS)
layers = bounded_int(1, MAX_DEPTH)
cloud_workers = bounded_int(1, MAX_WORKERS)
message_limit = bounded_int(MIN_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT)


def finite_float(text: str) -> float:
    """Any finite number (a bias)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 and at most a day (a timeout)."""
    value = finite_float(text)
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most "
                                         f"{MAX_TIMEOUT_S:g} seconds, got {text!r}")
    return value


def receive_timeout(text: str) -> float:
    """A serverless run's receive timeout: what the request schema allows (1 to 120 s)."""
    value = finite_float(text)
    if not 1 <= value <= MAX_RECEIVE_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_RECEIVE_TIMEOUT_S:g} "
                                         f"seconds, got {text!r}")
    return value


def duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``2d`` (or plain seconds) -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 1h or 2d, "
                                         f"got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def categories_file(text: str) -> str:
    """A categories file to compare with (``--expect``), read and checked while the
    command line is parsed: a bad one is refused before any inference runs."""
    try:
        read_categories(text)
    except FsdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def local_worker_limit() -> int:
    """How many local worker processes this machine can hold: 64 per core, and one per
    128 MiB of physical memory (each imports numpy and scipy)."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = cores * WORKERS_PER_CORE * WORKER_MEMORY
    return max(1, min(cores * WORKERS_PER_CORE, memory // WORKER_MEMORY, MAX_WORKERS))


def local_workers(text: str) -> int:
    """Workers of ``fsd infer``: one process each, so bounded by this machine."""
    return bounded_int(1, local_worker_limit())(text)
