"""Layer kernels: one Graph Challenge layer (product, bias, ReLU, cap, zeros dropped)
over the pieces of an input, summed in ascending input order so every kernel gives the
same bits. ``fused`` is compiled C (fused.c), ``scipy`` the fallback and the check."""

from __future__ import annotations

from fsd_inference.kernel.base import ColumnMap, KernelError, LayerKernel, LayerWeights, Piece
from fsd_inference.kernel.settings import (
    KERNELS,
    available_cpus,
    get_kernel,
    resolve_kernel_name,
    resolve_threads,
)

__all__ = [
    "KERNELS",
    "ColumnMap",
    "KernelError",
    "LayerKernel",
    "LayerWeights",
    "Piece",
    "available_cpus",
    "get_kernel",
    "resolve_kernel_name",
    "resolve_threads",
]
