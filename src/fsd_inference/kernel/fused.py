"""The fused layer kernel: product, bias, ReLU, cap and sorted CSR output in one pass
per block of rows, in compiled C (fused.c), bit-for-bit equal to :mod:`scipy_kernel`.

Rows are cut into blocks of about equal work (the input entries they hold); with more
than one thread, a pool of Python threads runs the blocks (each ctypes call releases
the GIL). :meth:`~FusedKernel.step` copies the blocks' rows once into one result (in
parallel); :meth:`~FusedKernel.step_pieces` hands the blocks over as they are, as the
next layer's input pieces (the reference's loop: no copy between layers). A single
block's arrays become the result's without a copy either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import ACTIVATION_CAP
from fsd_inference.kernel import library
from fsd_inference.kernel.base import (
    KernelError,
    LayerKernel,
    LayerWeights,
    Piece,
    checked_extract,
    power_of_two_scale,
)
from fsd_inference.kernel.twins import twin_outputs

BLOCKS_PER_THREAD = 4  # more blocks than threads, so a dense block does not idle the rest
MIN_BLOCK_ROWS = 64  # below this a block's fixed cost (scratch set-up, a call) dominates
# Output entries expected per input entry, per output column per input position: a
# layer's output is about as dense as its input (steady state), with room to spare.
CAPACITY_MARGIN = 1.25
_FUNCTIONS = {np.dtype(np.float32): "fsd_layer_f32", np.dtype(np.float64): "fsd_layer_f64"}
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="fsd-kernel")
    return _POOLS[threads]


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else int(array.ctypes.data)


TWIN_GAIN = 2  # use twin outputs when they cut a dense row's sums at least this much


@dataclass(frozen=True)
class _Weights:
    """W's arrays, its twin representatives' (when worth it) and the struct pointing at
    them all (the arrays are kept alive here)."""

    full: library.CsrArrays
    # representatives' columns, class of each output
    twins: tuple[library.CsrArrays, np.ndarray] | None
    struct: library.WeightsStruct

    @property
    def scale(self) -> float:
        return float(self.struct.scale)


def _prepare_weights(matrix: sp.csr_matrix) -> _Weights:
    n_in, n_out = matrix.shape
    if matrix.dtype not in _FUNCTIONS:
        raise KernelError(f"weights of dtype {matrix.dtype}: the fused kernel computes "
                          f"float32 or float64")
    full = library.CsrArrays.of(matrix)
    twins = None
    # twins are identical columns as stored: with duplicate entries SciPy adds each
    # product separately, so only a canonical W may be folded
    if n_out and matrix.has_canonical_format:
        found = twin_outputs(matrix)
        if found.classes * TWIN_GAIN <= n_out:
            rep = sp.csr_matrix(matrix[:, found.representatives])
            rep.sort_indices()
            twins = (library.CsrArrays.of(rep),
                     np.ascontiguousarray(found.class_of, dtype=np.int32))
    struct = library.WeightsStruct(
        n_in, n_out, _address(full.indptr), _address(full.indices), _address(full.data),
        power_of_two_scale(matrix), twins[1].max(initial=-1) + 1 if twins else 0,
        _address(twins[0].indptr) if twins else None,
        _address(twins[0].indices) if twins else None,
        _address(twins[0].data) if twins else None, _address(twins[1]) if twins else None)
    return _Weights(full, twins, struct)


def _prepare_piece(piece: Piece, batch: int, keep: list[Any]) -> library.PieceStruct:
    values = piece.values
    if not values.has_sorted_indices:  # the contract: ascending positions within a row
        values = values.sorted_indices()
    n_rows, width = values.shape
    indptr = np.ascontiguousarray(values.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(values.indices, dtype=np.int32)
    data = np.ascontiguousarray(values.data)
    rows = starts = positions = None
    if piece.rows is not None:
        rows = np.ascontiguousarray(piece.rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= batch or np.any(np.diff(rows) <= 0)):
            raise KernelError(f"an input piece's rows are not ascending ids below {batch}")
    if piece.columns is not None:
        starts = np.ascontiguousarray(piece.columns.starts, dtype=np.int64)
        positions = np.ascontiguousarray(piece.columns.positions, dtype=np.int64)
        if starts[0] != 0 or starts[-1] != positions.size or np.any(np.diff(starts) < 0):
            raise KernelError("an input piece's column map is inconsistent")
    keep.extend((indptr, indices, data, rows, starts, positions))
    ordered = piece.columns is not None and piece.columns.ordered
    return library.PieceStruct(_address(rows), n_rows, width, _address(starts),
                               _address(positions), int(ordered), _address(indptr),
                               _address(indices), _address(data))


def _row_work(pieces: Sequence[Piece], batch: int) -> np.ndarray:
    """Input entries per batch row: the work estimate that balances the blocks."""
    work = np.zeros(batch, dtype=np.int64)
    for piece in pieces:
        counts = np.diff(piece.values.indptr)
        if piece.rows is None:
            work[:counts.size] += counts
        else:
            work[piece.rows] += counts
    return work


def row_blocks(work: np.ndarray, blocks: int, min_rows: int = MIN_BLOCK_ROWS
               ) -> list[tuple[int, int]]:
    """Cut rows into at most ``blocks`` contiguous ranges of about equal total work, none
    shorter than ``min_rows`` rows unless the whole batch is."""
    batch = work.size
    blocks = max(1, min(blocks, batch // max(1, min_rows)))
    if blocks == 1:
        return [(0, batch)]
    total = np.cumsum(work + 1)  # +1: an empty row still costs its scan
    cuts = np.searchsorted(total, total[-1] * np.arange(1, blocks) / blocks)
    edges = np.unique(np.concatenate(([0], cuts, [batch])))
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges.tolist())]


class FusedKernel(LayerKernel):
    """The compiled one-pass kernel over ``threads`` threads."""

    name = "fused"

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        lib = library.load()
        if lib is None:
            raise KernelError(f"the fused kernel is unavailable: {library.load_error()}")
        self._lib = lib
        self.min_block_rows = MIN_BLOCK_ROWS
        self.scaled_rows = 0  # rows the last step computed on the power-of-two path
        self.twin_rows = 0  # ... and on the twin path

    def _step(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights, bias: float,
              cap: float) -> sp.csr_matrix:
        with self._blocks(pieces, batch, weights, bias, cap) as (handles, blocks):
            return self._collect(handles, blocks, batch, weights.shape[1], weights.dtype)

    def step_pieces(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights,
                    bias: float, cap: float = ACTIVATION_CAP) -> list[Piece]:
        """The layer's blocks of rows as pieces, each over the kernel's own buffers: no
        copy into one matrix (with 2 threads that copy was 2.27 s of a 7.88 s 4096 x 120
        pass, blocks of 16, 10,000 rows), and the next step reads a row held by one
        unmapped piece in place, as it reads a single matrix's."""
        self._check(pieces, batch, weights)
        with self._blocks(pieces, batch, weights, bias, cap) as (handles, blocks):
            return self._as_pieces(handles, blocks, batch, weights)

    def step_extract(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights,
                     bias: float, extract: np.ndarray, cap: float = ACTIVATION_CAP
                     ) -> tuple[list[Piece], sp.csr_matrix]:
        """The blocks as :meth:`step_pieces` does, and the columns ``extract`` taken by
        the kernel from each row's sums as it computes them: slicing them out of the
        output afterwards (SciPy, two passes over every entry) was 1.7 s of a neuron
        worker's 10.2 s at 4096 x 120, blocks of 16, 10,000 rows, 2 workers."""
        self._check(pieces, batch, weights)
        extract = checked_extract(extract, weights.shape[1])
        with self._blocks(pieces, batch, weights, bias, cap, extract) as (handles, blocks):
            sent = self._extracted(handles, blocks, batch, extract.size, weights.dtype)
            return self._as_pieces(handles, blocks, batch, weights), sent

    def _as_pieces(self, handles: list[int], blocks: list[tuple[int, int]], batch: int,
                   weights: LayerWeights) -> list[Piece]:
        if len(handles) == 1:
            return [Piece(self._collect(handles, blocks, batch, weights.shape[1],
                                        weights.dtype))]
        self._count(handles)
        return [self._own_block(handle, block, weights.shape[1], weights.dtype)
                for handle, block in zip(handles, blocks, strict=True)]

    def _extracted(self, handles: list[int], blocks: list[tuple[int, int]], batch: int,
                   width: int, dtype: np.dtype[Any]) -> sp.csr_matrix:
        """The blocks' extracted columns as one ``batch x width`` matrix (the blocks
        cover the batch's rows in order; a few columns: copied, not adopted)."""
        sizes = [int(self._lib.fsd_extract_nnz(h)) for h in handles]
        counts = np.zeros(batch, dtype=np.int64)
        indices = np.empty(sum(sizes), dtype=np.int32)
        data = np.empty(sum(sizes), dtype=dtype)
        at = 0
        for handle, block, size in zip(handles, blocks, sizes, strict=True):
            self._lib.fsd_extract_collect(handle, counts.ctypes.data + 8 * block[0],
                                          indices.ctypes.data + 4 * at,
                                          data.ctypes.data + dtype.itemsize * at,
                                          dtype.itemsize)
            at += size
        indptr = np.zeros(batch + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        sent = sp.csr_matrix((data, indices, indptr), shape=(batch, width), copy=False)
        sent.has_sorted_indices = True
        return sent

    def _own_block(self, handle: int, block: tuple[int, int], n_out: int,
                   dtype: np.dtype[Any]) -> Piece:
        """One block's result as a piece of rows ``block``, its arrays adopted."""
        rows = block[1] - block[0]
        size = int(self._lib.fsd_nnz(handle))
        indptr = np.zeros(rows + 1, dtype=np.int64)
        if size:
            indices, data = self._adopt(handle, size, dtype)
        else:
            indices, data = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=dtype)
        self._lib.fsd_collect(handle, 0, indptr.ctypes.data + 8, None, None, dtype.itemsize)
        index_dtype = np.int32 if size < np.iinfo(np.int32).max else np.int64
        values = sp.csr_matrix((data, indices.astype(index_dtype, copy=False),
                                indptr.astype(index_dtype)), shape=(rows, n_out), copy=False)
        values.has_sorted_indices = True
        return Piece(values, np.arange(block[0], block[1], dtype=np.int64))

    def _count(self, handles: list[int]) -> None:
        self.scaled_rows = sum(int(self._lib.fsd_scaled_rows(h)) for h in handles)
        self.twin_rows = sum(int(self._lib.fsd_twin_rows(h)) for h in handles)

    @contextlib.contextmanager
    def _blocks(self, pieces: Sequence[Piece], batch: int, weights: LayerWeights,
                bias: float, cap: float, extract: np.ndarray | None = None
                ) -> Iterator[tuple[list[int], list[tuple[int, int]]]]:
        """Run the kernel over blocks of rows: (the results' handles, the blocks), every
        handle freed on leaving. ``extract``: checked int32 output columns each result
        also holds (fsd_extract_collect)."""
        prepared: _Weights = weights.derived("fused", _prepare_weights)
        n_out = weights.shape[1]
        keep: list[Any] = []
        structs = (library.PieceStruct * max(1, len(pieces)))(
            *(_prepare_piece(piece, batch, keep) for piece in pieces))
        function = getattr(self._lib, _FUNCTIONS[weights.dtype])
        work = _row_work(pieces, batch)
        blocks = row_blocks(work, self.threads * BLOCKS_PER_THREAD if self.threads > 1 else 1,
                            self.min_block_rows)
        fill = n_out / max(1, weights.shape[0]) * CAPACITY_MARGIN

        def run(block: tuple[int, int]) -> int:
            handle = ctypes.c_void_p()
            capacity = int(work[block[0]:block[1]].sum() * fill) + n_out
            status = function(structs, len(pieces), ctypes.byref(prepared.struct), bias, cap,
                              block[0], block[1], capacity, _address(extract),
                              0 if extract is None else extract.size, ctypes.byref(handle))
            result = int(handle.value or 0)
            if status != library.OK:
                where = self._lib.fsd_bad_at(result) if result else -1
                self._lib.fsd_free(result or None)
                raise KernelError(_message(status, int(where), block))
            return result

        if self.threads > 1 and len(blocks) > 1:
            handles = list(_pool(self.threads).map(run, blocks))
        else:
            handles = [run(block) for block in blocks]
        try:
            yield handles, blocks
        finally:
            for handle in handles:
                self._lib.fsd_free(handle)

    def _collect(self, handles: list[int], blocks: list[tuple[int, int]], batch: int,
                 n_out: int, dtype: np.dtype[Any]) -> sp.csr_matrix:
        sizes = [int(self._lib.fsd_nnz(h)) for h in handles]
        self._count(handles)
        total = sum(sizes)
        indptr = np.zeros(batch + 1, dtype=np.int64)
        if len(handles) == 1 and total:  # one block: its arrays become the result's
            indices, data = self._adopt(handles[0], total, dtype)
            self._lib.fsd_collect(handles[0], 0, indptr.ctypes.data + 8 * (blocks[0][0] + 1),
                                  None, None, dtype.itemsize)
        else:  # several: each block copied into place, in parallel
            indices = np.empty(total, dtype=np.int32)
            data = np.empty(total, dtype=dtype)
            offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).tolist()

            def copy(b: int) -> None:
                self._lib.fsd_collect(handles[b], offsets[b],
                                      indptr.ctypes.data + 8 * (blocks[b][0] + 1),
                                      indices.ctypes.data + 4 * offsets[b],
                                      data.ctypes.data + dtype.itemsize * offsets[b],
                                      dtype.itemsize)

            if self.threads > 1 and len(handles) > 1:
                list(_pool(self.threads).map(copy, range(len(handles))))
            else:
                for b in range(len(handles)):
                    copy(b)
        index_dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
        result = sp.csr_matrix((data, indices.astype(index_dtype, copy=False),
                                indptr.astype(index_dtype)), shape=(batch, n_out), copy=False)
        result.has_sorted_indices = True
        return result

    def _adopt(self, handle: int, size: int, dtype: np.dtype[Any]
               ) -> tuple[np.ndarray, np.ndarray]:
        """A block's column and value arrays as numpy arrays over the kernel's own
        buffers (no copy); each buffer is released when the last array viewing it is."""
        indices_at, data_at = ctypes.c_void_p(), ctypes.c_void_p()
        self._lib.fsd_detach(handle, ctypes.byref(indices_at), ctypes.byref(data_at),
                             dtype.itemsize)
        value_type = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        return (_owned(self._lib, indices_at.value, ctypes.c_int32, size),
                _owned(self._lib, data_at.value, value_type, size))


def _owned(lib: ctypes.CDLL, address: int | None, ctype: Any, size: int) -> np.ndarray:
    """``size`` items of ``ctype`` at ``address`` (malloc'd by the kernel) as an array
    that frees them (``fsd_release``) once it and every view of it are gone."""
    if not address:
        raise KernelError("the kernel handed over no buffer")
    buffer = (ctype * size).from_address(address)
    weakref.finalize(buffer, lib.fsd_release, address)
    return np.ctypeslib.as_array(buffer)


def _message(status: int, where: int, block: tuple[int, int]) -> str:
    rows = f"rows {block[0]}..{block[1] - 1}"
    if status == library.NO_MEMORY:
        return f"out of memory computing {rows}"
    if status == library.BAD_COLUMN:
        return f"row {where}: an input column outside its piece (or the weights' rows)"
    if status == library.BAD_POSITION:
        return f"row {where}: a column map names an input position outside the weights' rows"
    return f"the kernel failed with status {status} on {rows}"
