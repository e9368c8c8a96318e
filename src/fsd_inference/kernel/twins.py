"""Twin outputs of a layer: columns of W that are identical (same sources, same weights).

Twins receive the same products in the same order, so their sums, and so their
activations, are equal bit for bit: the fused kernel sums one representative per class
and copies the value. Every dense block of a RadiX-Net makes twins (a block of B outputs
fed by the same B inputs with the same weight), so a dense row does 1/B of the work.
(The communication plan folds the same twins on the wire: partition/plan.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

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


def twin_outputs(matrix: sp.spmatrix) -> Twins:
    """Group the columns of ``matrix`` into classes of identical columns.

    Columns are bucketed by (entry count, hash), and every column is then checked
    entry by entry against its bucket's first column, so a hash collision can only
    split a class, never merge different columns.
    """
    csc = sp.csc_matrix(matrix)
    csc.sum_duplicates()  # canonical: sorted rows, no duplicates (a copy if needed)
    n_out = csc.shape[1]
    fan_in = np.diff(csc.indptr)
    hashes = _column_hashes(csc)
    order = np.lexsort((np.arange(n_out), hashes, fan_in))
    same = np.zeros(n_out, dtype=bool)
    if n_out > 1:
        same[1:] = (fan_in[order][1:] == fan_in[order][:-1]) & (
            hashes[order][1:] == hashes[order][:-1])
    bucket_first = order[np.maximum.accumulate(np.where(~same, np.arange(n_out), 0))]
    candidate = np.empty(n_out, dtype=np.int64)
    candidate[order] = bucket_first  # each column's bucket leader (its lowest column)
    # verify: every entry of column k equals the same entry of its candidate
    offsets = np.arange(csc.nnz) - np.repeat(csc.indptr[:-1], fan_in)
    mine = np.repeat(np.arange(n_out), fan_in)
    theirs = csc.indptr[candidate[mine]] + offsets
    bits = np.ascontiguousarray(csc.data).view(f"u{csc.data.dtype.itemsize}")
    equal = (csc.indices == csc.indices[theirs]) & (bits == bits[theirs])
    mismatched = np.unique(mine[~equal])
    candidate[mismatched] = mismatched  # a collision: the column stands alone
    representatives, class_of = np.unique(candidate, return_inverse=True)
    return Twins(np.asarray(class_of, dtype=np.int32).ravel(),
                 representatives.astype(np.int64))
