"""Which kernel computes the layers, on how many threads: argument > environment >
default (the compiled kernel when it loads, SciPy otherwise; every CPU this process may
run on)."""

from __future__ import annotations

import logging
import os

from fsd_inference.constants import ENV_KERNEL, ENV_THREADS
from fsd_inference.exceptions import ConfigError
from fsd_inference.kernel import library
from fsd_inference.kernel.base import LayerKernel
from fsd_inference.kernel.fused import FusedKernel
from fsd_inference.kernel.heap import retain_freed_memory
from fsd_inference.kernel.scipy_kernel import ScipyKernel

KERNELS: dict[str, type[LayerKernel]] = {"fused": FusedKernel, "scipy": ScipyKernel}
AUTO = "auto"
MAX_THREADS = 256
log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container or Lambda
    grants), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None = None, share: int = 1) -> int:
    """``threads``, else $FSD_THREADS, else the available CPUs divided among ``share``
    processes that run at once on this machine (at least 1)."""
    if threads is None:
        raw = os.environ.get(ENV_THREADS)
        if raw:
            try:
                threads = int(raw)
            except ValueError:
                raise ConfigError(f"{ENV_THREADS}={raw!r} is not a whole number") from None
        else:
            return max(1, available_cpus() // max(1, share))
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"kernel threads must be between 1 and {MAX_THREADS}, got {threads}")
    return threads


def resolve_kernel_name(name: str | None = None) -> str:
    """``name``, else $FSD_KERNEL, else ``auto``: fused when the library loads."""
    name = name or os.environ.get(ENV_KERNEL) or AUTO
    if name == AUTO:
        if library.load() is not None:
            return "fused"
        log.warning("fused kernel unavailable (%s): computing with SciPy", library.load_error())
        return "scipy"
    if name not in KERNELS:
        raise ConfigError(f"kernel {name!r} is unknown; choose {AUTO} or one of "
                          f"{', '.join(sorted(KERNELS))}")
    return name


def get_kernel(name: str | None = None, threads: int | None = None, share: int = 1
               ) -> LayerKernel:
    """The layer kernel to use, resolved argument > environment > default; the process
    that asks will compute layers, so its allocator keeps freed memory (kernel/heap.py)."""
    retain_freed_memory()
    return KERNELS[resolve_kernel_name(name)](resolve_threads(threads, share))
