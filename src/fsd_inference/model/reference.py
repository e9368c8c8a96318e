"""Single-process reference inference: the correctness oracle and the one-server baseline.

Graph Challenge rules, per layer: ``Z = Y @ W``; add the bias to the stored nonzeros of
Z only; ``Y = min(max(Z, 0), 32)``; drop the zeros. The categories are the 1-based rows
whose final activations have a nonzero sum.

Every path in the project computes a layer with a layer kernel (fsd_inference.kernel:
the fused C kernel, or SciPy as the fallback), which sums each output in ascending
source-neuron order. That makes the distributed workers bit-for-bit equal to this
reference in either dtype, however the neurons are split (see worker.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.kernel import LayerKernel, LayerWeights, Piece, get_kernel
from fsd_inference.kernel.base import join_rows
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.network import resolve_dtype


def layer_step(y: sp.csr_matrix, weights: sp.csr_matrix, bias: float,
               kernel: LayerKernel | None = None) -> sp.csr_matrix:
    """One layer on a whole input (the default kernel unless one is given)."""
    return (kernel or get_kernel()).single(y, LayerWeights(weights), bias)


def categories_of(y: sp.csr_matrix) -> np.ndarray:
    """1-based ids of the rows with a nonzero sum."""
    sums = np.asarray(y.sum(axis=1)).ravel()
    return np.flatnonzero(sums != 0).astype(np.int64) + 1


@dataclass(frozen=True)
class InferenceResult:
    categories: np.ndarray
    activations: sp.csr_matrix
    seconds: float
    edges: int
    inputs: int

    @property
    def edges_per_second(self) -> float:
        """The Graph Challenge rate: inputs x edges / seconds."""
        return self.inputs * self.edges / self.seconds if self.seconds > 0 else float("inf")


def infer(
    network: NetworkSource,
    inputs: sp.csr_matrix,
    dtype: str = "float64",
    progress: Callable[[int, int], None] | None = None,
    kernel: LayerKernel | None = None,
) -> InferenceResult:
    """Run all layers in this process with ``kernel`` (default: resolved from the
    environment, see kernel.settings). ``progress(done, total)`` is called after each
    layer.

    Layers are streamed from ``network`` one at a time (read, used, dropped), so memory
    holds the activations and one layer whatever the depth. ``seconds`` counts reading
    the layers too: for a bundle or a generated network that is part of the run.
    """
    target = resolve_dtype(dtype)
    kernel = kernel or get_kernel()
    y = sp.csr_matrix(inputs, dtype=target, copy=True)
    y.sort_indices()
    batch = y.shape[0]
    edges = 0
    start = time.perf_counter()
    # between layers the activations stay in the kernel's blocks of rows (joined once,
    # at the end): joining them every layer was a copy of the whole output
    parts = [Piece(y)]
    for k, w in enumerate(network.iter_layers(dtype=dtype), start=1):
        parts = kernel.step_pieces(parts, batch, LayerWeights(w), network.bias)
        edges += w.nnz
        if progress is not None:
            progress(k, network.depth)
    y = join_rows(parts, batch)
    seconds = time.perf_counter() - start
    return InferenceResult(categories_of(y), y, seconds, edges, inputs.shape[0])
