"""The blocks every worker sends for one layer, all workers at once.

:func:`fsd_inference.worker.outgoing` slices one block per group of targets with SciPy
(a column slice, a conversion to CSR, a row slice): about 0.25 ms of overhead per block,
which made counting a 1,000-worker or 62-worker prediction take minutes. Here the same
blocks come out of one pass over the layer's activations: every group's columns are
gathered from the layer's CSC matrix at once, one stable sort by (group, row) puts
each block's entries in CSR order (within a group, entries are already in column
order), and each block is a view into those arrays.

The result is the worker's, block for block: same groups (targets whose plan sets are
equal, first seen first), same order (workers ascending, then ``outgoing``'s order),
same rows, columns, values and dtypes. ``tests/unit/test_predict_blocks.py`` checks it
against ``outgoing`` on a real network's layers, and :mod:`.counts` re-checks a sample
of blocks against ``outgoing``'s slicing on every prediction (where it also times that
slicing for the time model), so a change in the worker shows up as an error, not as
silently wrong counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.codec import Block
from fsd_inference.exceptions import FsdError
from fsd_inference.partition.plan import LayerShard, WorkerShard

CHUNK_ENTRIES = 1 << 22  # nonzeros gathered at once (a few tens of MB of index arrays)


class BlockMismatch(FsdError):
    """The fast block builder disagrees with the worker's own slicing."""


@dataclass(frozen=True)
class Group:
    """Targets of one sender that receive the same block, and its columns."""

    source: int
    targets: tuple[int, ...]
    positions: np.ndarray  # positions in the sender's previous-layer outputs
    columns: np.ndarray  # the same as global neuron ids (columns of Y_{l-1})


def target_groups(layer: LayerShard) -> list[tuple[int, ...]]:
    """Targets grouped by equal plan sets, first seen first: ``outgoing``'s grouping."""
    groups: dict[bytes, list[int]] = {}
    for target, positions in layer.send.items():
        groups.setdefault(positions.tobytes(), []).append(target)
    return [tuple(targets) for targets in groups.values()]


def layer_groups(k: int, owners_prev: np.ndarray, shards: Sequence[WorkerShard]
                 ) -> list[Group]:
    """Every worker's groups for layer ``k`` (1-based), workers ascending."""
    order = np.argsort(owners_prev, kind="stable")  # each worker's columns, ascending
    first = np.concatenate(([0], np.cumsum(np.bincount(owners_prev,
                                                       minlength=len(shards)))))
    groups = []
    for shard in shards:
        q = shard.worker
        layer = shard.layers[k - 1]
        own = order[first[q]:first[q + 1]]
        for targets in target_groups(layer):
            positions = layer.send[targets[0]]
            groups.append(Group(q, targets, positions, own[positions]))
    return groups


def layer_blocks(columns: sp.csc_matrix, groups: Sequence[Group]) -> Iterator[Block]:
    """The block of every group, in order. ``columns``: Y_{l-1} as CSC, sorted indices.

    Groups are taken in runs of about ``CHUNK_ENTRIES`` nonzeros, so the gathered arrays
    stay small (a 16,384-neuron layer gathers tens of millions of entries)."""
    if not groups:
        return
    counts = np.diff(columns.indptr)
    sizes = np.array([int(counts[g.columns].sum()) for g in groups], dtype=np.int64)
    run = np.cumsum(sizes) // CHUNK_ENTRIES
    cuts = np.flatnonzero(np.diff(run)) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(groups)], strict=True):
        yield from _run_blocks(columns, groups[int(start):int(stop)])


def _run_blocks(columns: sp.csc_matrix, groups: Sequence[Group]) -> Iterator[Block]:
    batch = columns.shape[0]
    width = np.array([g.columns.size for g in groups], dtype=np.int64)
    cols = np.concatenate([g.columns for g in groups]).astype(np.int64)
    position = np.arange(cols.size) - np.repeat(np.cumsum(width) - width, width)
    indptr = columns.indptr.astype(np.int64)
    nnz = indptr[cols + 1] - indptr[cols]
    total = int(nnz.sum())
    entry = (np.arange(total) - np.repeat(np.cumsum(nnz) - nnz, nnz)
             + np.repeat(indptr[cols], nnz))
    group = np.repeat(np.repeat(np.arange(len(groups)), width), nnz)
    # entries come group by group, column by column (rows ascending in each): a stable
    # sort by (group, row) leaves them in column order within a row, i.e. CSR order
    # int32 keys when they fit: the sort and the gathers move half the bytes
    key_type = np.dtype(np.int32 if len(groups) * batch < 2**31 else np.int64)
    key = group.astype(key_type) * np.asarray(batch, dtype=key_type) + columns.indices[entry]
    order = np.argsort(key, kind="stable")
    key = key[order]
    data = columns.data[entry[order]]
    index = position[np.repeat(np.arange(cols.size), nnz)][order].astype(np.int32)
    row_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if total else np.zeros(
        0, dtype=np.int64)
    row_key = key[row_start]
    row_group = row_key // batch
    row_id = (row_key % batch).astype(np.int64)
    bounds = np.arange(len(groups) + 1)
    entry_at = np.searchsorted(group[order], bounds)
    row_at = np.searchsorted(row_group, bounds)
    for i, g in enumerate(groups):
        a, b = int(entry_at[i]), int(entry_at[i + 1])
        ra, rb = int(row_at[i]), int(row_at[i + 1])
        pointers = np.empty(rb - ra + 1, dtype=np.int32)
        pointers[:-1] = row_start[ra:rb] - a
        pointers[-1] = b - a
        yield Block(row_id[ra:rb], sp.csr_matrix((data[a:b], index[a:b], pointers),
                                                 shape=(rb - ra, g.columns.size)))


def same_block(fast: Block, real: Block) -> bool:
    """Equal rows, shape, pattern, values and dtype (what the codec encodes)."""
    a, b = fast.values, real.values
    return bool(np.array_equal(fast.rows, real.rows) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a.indptr, b.indptr)
                and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))
