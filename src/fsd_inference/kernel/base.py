"""The layer kernel interface: one Graph Challenge layer over pieces of an input.

A layer computes, for a batch of rows, ``Y' = min(max(Y @ W (+ bias on stored
entries), 0), cap)`` with zeros dropped. ``Y`` need not exist as one matrix: a worker
holds its own columns and receives every peer's block, so the input arrives as
:class:`Piece` s, each a CSR block whose rows name batch rows and whose columns map to
input positions (rows of ``W``). Every kernel sums each output over the input positions
in ascending order, the order of SciPy's product on an index-sorted ``Y``, so every
kernel and every split of the input gives the same bits (see kernel/fused.c).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import ACTIVATION_CAP
from fsd_inference.exceptions import FsdError


class KernelError(FsdError):
    """A layer could not be computed: malformed operands or no memory; names the layer
    part that failed."""


@dataclass(frozen=True)
class ColumnMap:
    """Where each column of a piece goes: column ``c`` feeds the input positions
    ``positions[starts[c]:starts[c + 1]]`` (one for a plain block, several for a column
    that carries twins, none for a column this layer does not need)."""

    starts: np.ndarray  # int64, width + 1
    positions: np.ndarray  # int64

    @property
    def width(self) -> int:
        return int(self.starts.size - 1)

    @property
    def identity(self) -> bool:
        """Column ``c`` is position ``c`` for every column: the same as no map, which
        the compiled kernel reads in place instead of merging (1.6x faster a layer)."""
        width = self.width
        return bool(self.positions.size == width
                    and np.array_equal(self.starts, np.arange(width + 1))
                    and np.array_equal(self.positions, np.arange(width)))

    @functools.cached_property
    def ordered(self) -> bool:
        """Each column feeds at most one position and positions ascend with the column
        (a worker's own columns): a row maps in order, with no merge."""
        return bool(np.all(np.diff(self.starts) <= 1) and np.all(np.diff(self.positions) > 0))

    @classmethod
    def one_to_one(cls, positions: np.ndarray) -> ColumnMap:
        """Column ``c`` -> ``positions[c]``."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        return cls(np.arange(positions.size + 1, dtype=np.int64), positions)

    @classmethod
    def gather(cls, positions: np.ndarray, columns: np.ndarray, width: int) -> ColumnMap:
        """Position ``positions[t]`` takes column ``columns[t]`` of a ``width``-column
        block: the inverse, grouped by column (columns may repeat or be absent)."""
        columns = np.asarray(columns, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        if columns.size != positions.size:
            raise KernelError(f"column map: {positions.size} positions but "
                              f"{columns.size} source columns")
        if columns.size and (columns.min() < 0 or columns.max() >= width):
            raise KernelError(f"column map: a source column outside 0..{width - 1}")
        order = np.argsort(columns, kind="stable")
        starts = np.zeros(width + 1, dtype=np.int64)
        np.cumsum(np.bincount(columns, minlength=width), out=starts[1:])
        return cls(starts, np.ascontiguousarray(positions[order]))


@dataclass(frozen=True)
class Piece:
    """Part of a layer's input: ``values`` (CSR, one row per entry of ``rows``).

    ``rows``: the batch row of each row of ``values``, strictly ascending; ``None`` when
    row ``i`` of ``values`` is batch row ``i``. ``columns``: where each column goes;
    ``None`` when column ``c`` is input position ``c``. The pieces of one layer cover
    disjoint input positions.
    """

    values: sp.csr_matrix
    rows: np.ndarray | None = None
    columns: ColumnMap | None = None


@dataclass
class LayerWeights:
    """One layer's ``W`` (rows: input positions, columns: outputs) with what kernels
    derive from it once: contiguous index arrays and whether every weight is the same
    power of two. Built once per layer and reused for every batch."""

    matrix: sp.csr_matrix
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.matrix.shape
        return int(rows), int(columns)

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(self.matrix.dtype)
        return dtype

    def derived(self, name: str, build: Any) -> Any:
        """``build(matrix)`` computed once and kept (indices, scale, ...)."""
        if name not in self._derived:
            self._derived[name] = build(self.matrix)
        return self._derived[name]


def power_of_two_scale(matrix: sp.csr_matrix) -> float:
    """The common weight when every stored weight equals the same normal power of two
    (RadiX-Net's 1/16), else 0.0. Exact in both dtypes: such a value converts exactly."""
    data = matrix.data
    if data.size == 0:
        return 0.0
    first = data[0]
    if not np.isfinite(first) or first == 0 or not np.all(data == first):
        return 0.0
    mantissa, _ = np.frexp(first)
    if abs(float(mantissa)) != 0.5 or abs(first) < np.finfo(data.dtype).tiny:
        return 0.0
    return float(first)


class LayerKernel(ABC):
    """Computes one layer for a batch from input pieces; subclasses differ only in how."""

    name: str = ""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def step(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights, bias: float,
             cap: float = ACTIVATION_CAP) -> sp.csr_matrix:
        """The layer's output, ``batch x outputs`` CSR with sorted indices, zeros dropped."""
        self._check(pieces, batch, weights)
        return self._step(pieces, batch, weights, bias, cap)

    def step_pieces(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights,
                    bias: float, cap: float = ACTIVATION_CAP) -> list[Piece]:
        """The layer's output as row pieces, for the next step's input: a kernel that
        computes blocks of rows may hand them over as they are instead of joining them
        into one matrix (:func:`join_rows` does, when one is needed). Here: one piece."""
        return [Piece(self.step(pieces, batch, weights, bias, cap))]

    def step_extract(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights,
                     bias: float, extract: np.ndarray, cap: float = ACTIVATION_CAP
                     ) -> tuple[list[Piece], sp.csr_matrix]:
        """:meth:`step_pieces`, and the output's columns ``extract`` (ascending output
        columns) as a ``batch x extract.size`` CSR matrix with sorted indices: what a
        worker sends. Here: sliced out of the joined output; a kernel may take them while
        it computes (FusedKernel: from the row's sums, in cache)."""
        extract = checked_extract(extract, weights.shape[1])
        out = self.step_pieces(pieces, batch, weights, bias, cap)
        return out, sp.csr_matrix(join_rows(out, batch)[:, extract])

    def _check(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights) -> None:
        for piece in pieces:
            if piece.values.dtype != weights.dtype:
                raise KernelError(f"a {piece.values.dtype} input piece against "
                                  f"{weights.dtype} weights")
            rows = piece.values.shape[0]
            if piece.rows is None and rows != batch:
                raise KernelError(f"an input piece of {rows} rows for a batch of {batch}")
            if piece.rows is not None and piece.rows.size != rows:
                raise KernelError(f"an input piece names {piece.rows.size} rows but has {rows}")
            if piece.columns is not None and piece.columns.width != piece.values.shape[1]:
                raise KernelError(f"an input piece of {piece.values.shape[1]} columns with a "
                                  f"map for {piece.columns.width}")

    def single(self, y: sp.csr_matrix, weights: LayerWeights, bias: float) -> sp.csr_matrix:
        """The layer on one whole input ``y`` (its columns are the input positions)."""
        return self.step([Piece(y)], y.shape[0], weights, bias)

    @abstractmethod
    def _step(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights, bias: float,
              cap: float) -> sp.csr_matrix:
        """Compute the layer; the pieces' shapes and dtypes are checked."""


def checked_extract(extract: np.ndarray, n_out: int) -> np.ndarray:
    """Output columns to extract as contiguous int32: ascending, each below ``n_out``."""
    columns = np.asarray(extract)
    if columns.ndim != 1 or (columns.size and columns.dtype.kind not in "iu"):
        raise KernelError("columns to extract must be a 1-D array of integers")
    if columns.size and (columns[0] < 0 or columns[-1] >= n_out
                         or np.any(np.diff(columns) <= 0)):
        raise KernelError(f"columns to extract must ascend strictly within 0..{n_out - 1}")
    return np.ascontiguousarray(columns, dtype=np.int32)


def join_rows(pieces: Sequence[Piece], batch: int) -> sp.csr_matrix:
    """The row pieces of :meth:`LayerKernel.step_pieces` as one ``batch``-row CSR matrix
    (their rows: consecutive ranges that together hold every row once, in order)."""
    if len(pieces) == 1 and pieces[0].rows is None:
        values = pieces[0].values
        joined = sp.csr_matrix(values)
        # the kernel's flag, carried over: SciPy's new object would check every row again
        # (1.2 ms a layer at 4096 x 10,000, in every next step's piece check)
        joined.has_sorted_indices = values.has_sorted_indices
        return joined
    start = 0
    for piece in pieces:
        rows = piece.rows
        if (rows is None or piece.columns is not None
                or (rows.size and (rows[0] != start or rows[-1] != start + rows.size - 1))):
            raise KernelError("row pieces to join must be unmapped consecutive row ranges")
        start += int(rows.size)
    if start != batch:
        raise KernelError(f"row pieces hold {start} rows of a batch of {batch}")
    joined = sp.csr_matrix(sp.vstack([piece.values for piece in pieces], format="csr"))
    joined.has_sorted_indices = all(piece.values.has_sorted_indices for piece in pieces)
    return joined
