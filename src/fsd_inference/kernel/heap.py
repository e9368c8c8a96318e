"""Keep freed memory in the process's heap between layers (glibc's ``mallopt``).

Every layer allocates its output (60-90 MB a layer at 4096 neurons x 10,000 rows) and
frees the previous layer's. glibc serves each
allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as chunks are
freed) with a fresh ``mmap`` and unmaps it on ``free``, so each layer writes into
untouched pages: the OS takes a fault per 4 KiB page and zeroes it. Measured on
4096 x 120 (blocks of 16, 10,000 inputs, ``fsd reference --threads 1``, same session):
5.4 million minor faults and 12.9 s of system time in a 28.4 s run. With the thresholds
below freed chunks are reused: 0.1 million faults, 0.8 s, 16.7 s wall (2 threads: 21.3
-> 13.5 s). The price is the heap's fragmentation: peak RSS 0.70 -> 1.0 GB there, within
the bound :func:`fsd_inference.strategy.memory.task_memory_mb` sizes functions with
(three dense copies of the activations).

With several kernel threads, each thread's blocks came from its own arena (glibc gives
threads arenas of their own), whose heaps are trimmed and grown again between layers:
one arena for the process (``M_ARENA_MAX`` 1; the kernel's allocations are few and
large, so sharing its lock costs nothing measurable) took a 2-thread pass over the same
network, its blocks handed from layer to layer, from 0.62-0.75 to 0.21 million faults
and 7.0 to 6.6 s.

Only glibc has ``mallopt`` (Linux and Lambda's Amazon Linux); elsewhere this does
nothing. ``FSD_HEAP=os`` leaves the allocator's defaults (for measuring the difference).
"""

from __future__ import annotations

import ctypes
import functools
import os

from fsd_inference.constants import ENV_HEAP
from fsd_inference.exceptions import ConfigError

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 1  # every thread allocates from the main arena
MMAP_THRESHOLD = 512 * 2**20  # larger allocations still map their own pages
TRIM_THRESHOLD = 512 * 2**20  # free memory kept at the heap's top before it is returned
RETAIN, OS = "retain", "os"  # the values of $FSD_HEAP


@functools.cache
def retain_freed_memory() -> bool:
    """Tune this process's allocator once; True if it now keeps freed chunks."""
    mode = os.environ.get(ENV_HEAP) or RETAIN
    if mode not in (RETAIN, OS):
        raise ConfigError(f"{ENV_HEAP}={mode!r}: use {RETAIN} (the default) or {OS}")
    applied = False
    if mode == RETAIN:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (AttributeError, OSError):  # not glibc
            mallopt = None
        if mallopt is not None:
            applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                           and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                           and mallopt(M_ARENA_MAX, ARENAS))
    return applied
