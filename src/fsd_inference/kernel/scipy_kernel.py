"""The SciPy layer kernel: the project's original arithmetic, kept as the fallback when
the compiled kernel is unavailable and as the independent check in the tests.

Several passes per layer: the pieces are assembled into one index-sorted CSR input,
multiplied (SciPy's csr_matmat sums each output in the stored, here ascending, order of
the input's entries), then bias on the stored entries, clip, zeros dropped, indices
sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from fsd_inference.kernel.base import LayerKernel, LayerWeights, Piece


def activate(z: sp.csr_matrix, bias: float, cap: float) -> sp.csr_matrix:
    """Bias on stored nonzeros, ReLU, cap, zeros dropped; in place, returns ``z``."""
    z.data += z.data.dtype.type(bias)
    np.clip(z.data, 0.0, cap, out=z.data)
    z.eliminate_zeros()
    z.sort_indices()
    return z


def assemble(batch: int, width: int, pieces: Sequence[Piece]) -> sp.csr_matrix:
    """The pieces as one ``batch x width`` CSR matrix with sorted column indices."""
    rows, cols, data = [], [], []
    for piece in pieces:
        values = sp.csr_matrix(piece.values)
        counts = np.diff(values.indptr)
        row_ids = np.arange(values.shape[0]) if piece.rows is None else piece.rows
        entry_rows = np.repeat(row_ids, counts)
        if piece.columns is None:
            rows.append(entry_rows)
            cols.append(values.indices)
            data.append(values.data)
            continue
        fan = np.diff(piece.columns.starts)[values.indices]  # positions per entry
        first = np.repeat(piece.columns.starts[values.indices], fan)
        offset = np.arange(int(fan.sum())) - np.repeat(np.cumsum(fan) - fan, fan)
        rows.append(np.repeat(entry_rows, fan))
        cols.append(piece.columns.positions[first + offset])
        data.append(np.repeat(values.data, fan))
    dtype = pieces[0].values.dtype if pieces else np.float64
    matrix = sp.csr_matrix(
        (np.concatenate(data) if data else np.zeros(0, dtype),
         (np.concatenate(rows) if rows else np.zeros(0, np.int64),
          np.concatenate(cols) if cols else np.zeros(0, np.int64))),
        shape=(batch, width), dtype=dtype,
    )
    matrix.sort_indices()
    return matrix


class ScipyKernel(LayerKernel):
    """Assemble, multiply, activate: SciPy's passes, single-threaded."""

    name = "scipy"

    def _step(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights, bias: float,
              cap: float) -> sp.csr_matrix:
        n_in = weights.shape[0]
        if len(pieces) == 1 and pieces[0].rows is None and pieces[0].columns is None:
            y = pieces[0].values
        else:
            y = assemble(batch, n_in, pieces)
        return activate(sp.csr_matrix(y @ weights.matrix), bias, cap)
