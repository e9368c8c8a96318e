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
from collections.abc import Callable, Sequence

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
    bounds = np.asarray([0, y.shape[0]])
    return run_task(shard, y, channel, first, last, bounds,
                    on_step=None if on_layer is None else lambda k, _: on_layer(k))


def run_task(
    shard: WorkerShard,
    y: sp.csr_matrix,
    channel: Channel,
    first: int,
    last: int,
    bounds: np.ndarray,
    send_tail: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    offset: int = 0,
) -> sp.csr_matrix:
    """One task of a shape (strategy/shape.py): layers ``first..last`` on the rows of
    ``y``, micro-batch by micro-batch.

    ``bounds`` cut the rows into micro-batches; micro-batch m's blocks travel as part m
    of each layer's step, so the next stage can start on m while this one computes
    m + 1. ``send_tail``: this task ends a pipeline stage, so after its last layer it
    sends the next stage what that stage's first layer needs (the send half of layer
    ``last + 1``). ``on_step(layer, part)`` is called after each computed step.
    ``offset``: the shard names its peers by slot within its row group; on the channel
    they are tasks ``offset + slot`` (the group's first task).
    """
    outputs = []
    for part in range(bounds.size - 1):
        rows = int(bounds[part + 1] - bounds[part])
        y_part = sp.csr_matrix(y[int(bounds[part]):int(bounds[part + 1])])
        for k in range(first, last + 1):
            y_part = _one_layer(k, shard.layers[k - 1], y_part, rows, channel, shard.bias,
                                part, offset)
            if on_step is not None:
                on_step(k, part)
        if send_tail:
            _send(last + 1, shard.layers[last], y_part, channel, part, offset)
        outputs.append(y_part)
    channel.flush()
    if len(outputs) == 1:
        return outputs[0]
    return sp.csr_matrix(sp.vstack(outputs, format="csr"))


def _send(k: int, layer: LayerShard, y: sp.csr_matrix, channel: Channel, part: int,
          offset: int = 0) -> None:
    """Send every target of layer ``k`` the nonzero rows of the columns it needs."""
    for target, positions in layer.send.items():
        channel.send(k, offset + target, Block.from_columns(y[:, positions]), part)


def _one_layer(k: int, layer: LayerShard, y: sp.csr_matrix, batch: int, channel: Channel,
               bias: float, part: int = 0, offset: int = 0) -> sp.csr_matrix:
    m = channel.metrics.layer(k)
    started = time.perf_counter()
    _send(k, layer, y, channel, part, offset)
    pieces = [local_piece(y, layer.local_from, layer.local_to, batch)]
    compute = time.perf_counter() - started

    waited = time.perf_counter()
    received = channel.receive(k, [offset + q for q in layer.recv], part=part)
    blocks = {task - offset: block for task, block in received.items()}
    m.wait_s += time.perf_counter() - waited

    started = time.perf_counter()
    for source, block in sorted(blocks.items()):
        if not block.empty:
            values = block.values
            if source in layer.expand:  # twins travel once; copy their shared column
                values = sp.csr_matrix(values[:, layer.expand[source]])
            pieces.append((block.rows, layer.recv[source], values))
    y_in = assemble(batch, layer.inputs.size, pieces)
    y_out = layer_step(y_in, layer.weights, bias)
    m.compute_s += compute + time.perf_counter() - started
    return y_out
