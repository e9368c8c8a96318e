"""Single-process reference inference: the correctness oracle and the one-server baseline.

Graph Challenge rules, per layer: ``Z = Y @ W``; add the bias to the stored nonzeros of
Z only; ``Y = min(max(Z, 0), 32)``; drop the zeros. The categories are the 1-based rows
whose final activations have a nonzero sum.

Every path in the project computes a layer with :func:`layer_step` on operands whose
column indices are sorted, so SciPy sums each output in ascending source-neuron order.
That makes the distributed workers bit-for-bit equal to this reference in either dtype,
however the neurons are split (see worker.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import ACTIVATION_CAP
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.network import resolve_dtype


def activate(z: sp.csr_matrix, bias: float) -> sp.csr_matrix:
    """Bias on stored nonzeros, ReLU, cap at 32, zeros dropped; in place, returns ``z``."""
    z.data += z.data.dtype.type(bias)
    np.clip(z.data, 0.0, ACTIVATION_CAP, out=z.data)
    z.eliminate_zeros()
    z.sort_indices()
    return z


def layer_step(y: sp.csr_matrix, weights: sp.csr_matrix, bias: float) -> sp.csr_matrix:
    """One layer. ``y`` must have sorted indices (every function here keeps them so)."""
    return activate(sp.csr_matrix(y @ weights), bias)


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
) -> InferenceResult:
    """Run all layers on one core. ``progress(done, total)`` is called after each layer.

    Layers are streamed from ``network`` one at a time (read, used, dropped), so memory
    holds the activations and one layer whatever the depth. ``seconds`` counts reading
    the layers too: for a bundle or a generated network that is part of the run.
    """
    target = resolve_dtype(dtype)
    y = sp.csr_matrix(inputs, dtype=target, copy=True)
    y.sort_indices()
    edges = 0
    start = time.perf_counter()
    for k, w in enumerate(network.iter_layers(dtype=dtype), start=1):
        y = layer_step(y, w, network.bias)
        edges += w.nnz
        if progress is not None:
            progress(k, network.depth)
    seconds = time.perf_counter() - start
    return InferenceResult(categories_of(y), y, seconds, edges, inputs.shape[0])
