"""Twin outputs of a layer: columns of W that are identical (same sources, same weights).

Twins receive the same products in the same order, so their sums, and so their
activations, are equal bit for bit: the fused kernel sums one representative per class
and copies the value. Every dense block of a RadiX-Net makes twins (a block of B outputs
fed by the same B inputs with the same weight), so a dense row does 1/B of the work.
(The communication plan folds the same twins on the wire: partition/plan.py.)

The compiled library finds them in one pass over W's CSR arrays (fused.c,
``fsd_twin_classes``); without it, NumPy does the same on a CSC copy (6.6 ms against
0.5 ms a layer at 4096 neurons with blocks of 16: a tenth of a data task's time went there).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.kernel import library
from fsd_inference.kernel.base import KernelError

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: spreads indices over the hash


@dataclass(frozen=True)
class Twins:
    """``class_of[k]``: the class of output ``k``, classes numbered by their first
    (lowest) member; ``representatives[c]``: that member."""

    class_of: np.ndarray  # int32, one per output
    representatives: np.ndarray  # int64, one per class, ascending

    @property
    def classes(self) -> int:
        return int(self.representatives.size)


def twin_outputs(matrix: sp.spmatrix) -> Twins:
    """Group the columns of ``matrix`` into classes of identical columns (same entries,
    same value bits): compiled when the library is there, else NumPy."""
    lib = library.load()
    return numpy_twins(matrix) if lib is None else compiled_twins(lib, matrix)


def compiled_twins(lib: ctypes.CDLL, matrix: sp.spmatrix, hash_mask: int = 2**64 - 1
                   ) -> Twins:
    """``fsd_twin_classes`` on a canonical CSR copy (``hash_mask`` 0 makes every hash
    collide: the tests' way to exercise the regrouping)."""
    csr = sp.csr_matrix(matrix)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # sorted columns, no duplicates
    if csr.data.dtype.itemsize not in (4, 8):  # the library compares 32- or 64-bit values
        return numpy_twins(csr)
    n_in, n_out = csr.shape
    arrays = library.CsrArrays.of(csr)  # checked: the C code trusts every index
    leader = np.empty(n_out, dtype=np.int64)
    class_of = np.empty(n_out, dtype=np.int32)
    classes = lib.fsd_twin_classes(n_in, n_out, arrays.indptr.ctypes.data,
                                   arrays.indices.ctypes.data, arrays.data.ctypes.data,
                                   arrays.data.dtype.itemsize, hash_mask,
                                   leader.ctypes.data, class_of.ctypes.data)
    if classes < 0:
        raise KernelError(f"out of memory finding the twin outputs of a {n_in} x {n_out} layer")
    return Twins(class_of, np.flatnonzero(leader == np.arange(n_out)).astype(np.int64))


def _column_hashes(csc: sp.csc_matrix) -> np.ndarray:
    """A 64-bit hash of each column's (row, value) pairs; equal columns hash equal."""
    values = np.ascontiguousarray(csc.data, dtype=np.float64).view(np.uint64)
    with np.errstate(over="ignore"):
        entry = (csc.indices.astype(np.uint64) + np.uint64(1)) * _MIX
        entry ^= values + (entry >> np.uint64(29))
        entry *= _MIX
    sums = np.zeros(csc.nnz + 1, dtype=np.uint64)
    np.cumsum(entry, out=sums[1:], dtype=np.uint64)  # wraps modulo 2**64, as intended
    hashes: np.ndarray = sums[csc.indptr[1:]] - sums[csc.indptr[:-1]]
    return hashes


def _leaders(columns: np.ndarray, fan_in: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """For each of ``columns`` (ascending), the lowest of them with the same entry count
    and hash."""
    n = columns.size
    order = np.lexsort((columns, hashes[columns], fan_in[columns]))
    same = np.zeros(n, dtype=bool)
    if n > 1:
        f, h = fan_in[columns][order], hashes[columns][order]
        same[1:] = (f[1:] == f[:-1]) & (h[1:] == h[:-1])
    first = order[np.maximum.accumulate(np.where(~same, np.arange(n), 0))]
    leaders = np.empty(n, dtype=np.int64)
    leaders[order] = columns[first]
    return leaders


def numpy_twins(matrix: sp.spmatrix) -> Twins:
    """The same classes in NumPy, on a CSC copy.

    Columns are bucketed by (entry count, hash) and every column is checked entry by entry
    against its bucket's lowest column. A column that differs (a hash collision) is
    bucketed again among the other such columns, until every column matches its leader:
    the classes are exactly the identical columns.
    """
    csc = sp.csc_matrix(matrix)
    csc.sum_duplicates()  # canonical: sorted rows, no duplicates (a copy if needed)
    n_out = csc.shape[1]
    fan_in = np.diff(csc.indptr)
    hashes = _column_hashes(csc)
    candidate = _leaders(np.arange(n_out), fan_in, hashes)
    offsets = np.arange(csc.nnz) - np.repeat(csc.indptr[:-1], fan_in)
    mine = np.repeat(np.arange(n_out), fan_in)
    bits = np.ascontiguousarray(csc.data).view(f"u{csc.data.dtype.itemsize}")
    while True:
        # verify: every entry of column k equals the same entry of its candidate
        theirs = csc.indptr[candidate[mine]] + offsets
        equal = (csc.indices == csc.indices[theirs]) & (bits == bits[theirs])
        mismatched = np.unique(mine[~equal])
        if mismatched.size == 0:
            break
        # each round, the lowest column of every regrouped bucket leads itself
        candidate[mismatched] = _leaders(mismatched, fan_in, hashes)
    representatives, class_of = np.unique(candidate, return_inverse=True)
    return Twins(np.asarray(class_of, dtype=np.int32).ravel(),
                 representatives.astype(np.int64))
