"""The per-layer worker loop, channel-agnostic (DESIGN section 2).

Per layer l, worker p:
1. sends every target t the nonzero rows of ``Y_{l-1}[:, R_l(p, t)]`` (an empty block,
   the explicit "nothing for you" marker, when no row has a nonzero),
2. while those are in flight, slices its own part of the next layer's input,
3. receives one block from every source the plan names (early blocks for later layers
   are buffered by the channel, duplicates dropped, every wait bounded),
4. assembles ``Y_in`` with columns in ascending global neuron order and computes its
   columns of ``Y_l`` with :func:`~fsd_inference.model.reference.layer_step`.

Why one assembled multiply rather than "local product now, remote products added
later": splitting a sum changes its rounding, and a Graph Challenge activation that is
exactly zero in exact arithmetic can land either side of zero depending on the order
(seen: 1 row in 5,000 differs between float32 and float64). Summing in the reference's
order makes every worker bit-for-bit equal to ``fsd reference`` in either dtype, for any
partition and any P; compute is a few percent of a layer's time, communication the rest.

There is no global barrier: waits are point-to-point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.base import Channel
from fsd_inference.channels.codec import Block
from fsd_inference.model.reference import layer_step
from fsd_inference.partition.plan import LayerShard, WorkerShard


def assemble(batch: int, width: int, pieces: Sequence[tuple[np.ndarray, np.ndarray,
                                                            sp.csr_matrix]]) -> sp.csr_matrix:
    """Place blocks into one ``batch x width`` CSR matrix with sorted column indices.

    Each piece is ``(row ids, column positions, values)``: ``values[i, j]`` goes to
    ``(rows[i], columns[j])``. The pieces' column sets are disjoint.
    """
    rows, cols, data = [], [], []
    for row_ids, positions, values in pieces:
        counts = np.diff(values.indptr)
        rows.append(np.repeat(row_ids, counts))
        cols.append(positions[values.indices])
        data.append(values.data)
    dtype = pieces[0][2].dtype if pieces else np.float64
    matrix = sp.csr_matrix(
        (np.concatenate(data) if data else np.zeros(0, dtype),
         (np.concatenate(rows) if rows else np.zeros(0, np.int64),
          np.concatenate(cols) if cols else np.zeros(0, np.int64))),
        shape=(batch, width), dtype=dtype,
    )
    matrix.sort_indices()
    return matrix


def merge_columns(batch: int, neurons: int,
                  parts: Iterable[tuple[np.ndarray, sp.csr_matrix]], dtype: str
                  ) -> sp.csr_matrix:
    """The full ``batch x neurons`` matrix from every worker's ``(columns, y)``: the
    gather of the final layer, locally and in the cloud."""
    pieces = [(np.arange(batch), np.asarray(columns, dtype=np.int64),
               sp.csr_matrix(y, dtype=dtype)) for columns, y in parts]
    return assemble(batch, neurons, pieces).astype(dtype)


def local_piece(y: sp.csr_matrix, local_from: np.ndarray, local_to: np.ndarray,
                batch: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """This worker's own columns that the next product needs, without a column slice:
    one lookup maps each stored column to its input position (or drops it)."""
    lookup = np.full(y.shape[1], -1, dtype=np.int64)
    lookup[local_from] = np.arange(local_from.size)
    mapped = lookup[y.indices]
    keep = mapped >= 0
    row_of_entry = np.repeat(np.arange(batch), np.diff(y.indptr))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(row_of_entry[keep], minlength=batch))))
    values = sp.csr_matrix((y.data[keep], mapped[keep], indptr),
                           shape=(batch, local_from.size))
    return np.arange(batch), local_to, values


def outgoing(layer: LayerShard, y: sp.csr_matrix) -> Iterator[tuple[tuple[int, ...], Block]]:
    """The blocks a worker sends for one layer: ``(targets, block)``, in send order.

    Targets whose plan sets are equal (frequent when a worker owns few neurons) get the
    same block, sliced once. ``y`` holds the worker's columns of the previous layer; a
    CSC matrix works too (fsd_inference.predict counts every worker's blocks from the
    reference's activations through this same function, without any transport).
    """
    groups: dict[bytes, list[int]] = {}
    for target, positions in layer.send.items():
        groups.setdefault(positions.tobytes(), []).append(target)
    for targets in groups.values():
        yield tuple(targets), Block.from_columns(y[:, layer.send[targets[0]]])


def run_layers(
    shard: WorkerShard,
    y: sp.csr_matrix,
    channel: Channel,
    first: int = 1,
    last: int | None = None,
    on_layer: Callable[[int], None] | None = None,
) -> sp.csr_matrix:
    """Run layers ``first..last`` (1-based, inclusive) and return this worker's Y_last.

    ``y`` holds this worker's columns of ``Y_{first-1}`` (its outputs of the previous
    layer, or its input columns when ``first == 1``), one row per input of the batch.
    """
    last = shard.depth if last is None else last
    batch = y.shape[0]
    for k in range(first, last + 1):
        layer = shard.layers[k - 1]
        y = _one_layer(k, layer, y, batch, channel, shard.bias)
        if on_layer is not None:
            on_layer(k)
    channel.flush()
    return y


def _one_layer(k: int, layer: LayerShard, y: sp.csr_matrix, batch: int, channel: Channel,
               bias: float) -> sp.csr_matrix:
    m = channel.metrics.layer(k)
    started = time.perf_counter()
    for targets, block in outgoing(layer, y):
        for target in targets:
            channel.send(k, target, block)
    pieces = [local_piece(y, layer.local_from, layer.local_to, batch)]
    compute = time.perf_counter() - started

    waited = time.perf_counter()
    blocks = channel.receive(k, layer.recv.keys())
    m.wait_s += time.perf_counter() - waited

    started = time.perf_counter()
    for source, block in blocks.items():
        if not block.empty:
            values = block.values
            if source in layer.expand:  # twins travel once; copy their shared column
                values = sp.csr_matrix(values[:, layer.expand[source]])
            pieces.append((block.rows, layer.recv[source], values))
    y_in = assemble(batch, layer.inputs.size, pieces)
    y_out = layer_step(y_in, layer.weights, bias)
    m.compute_s += compute + time.perf_counter() - started
    return y_out
