"""The per-layer worker loop, channel-agnostic (DESIGN section 2), with compute and
exchange overlapped by row parts.

The batch's rows are cut into ``parts`` ranges, identical on every worker
(:func:`part_bounds`). Messages are keyed by (layer, part, source) (channels/codec.py).
Worker p, for every layer l and part c in turn:
1. receives part c of layer l from every source the plan names (early blocks for later
   layers or parts are buffered by the channel, duplicates dropped, every wait bounded);
2. computes rows c of its columns of ``Y_l`` with the layer kernel, straight from the
   pieces: its own columns of ``Y_{l-1}`` and every peer's block, merged by the kernel
   in ascending global neuron order;
3. sends every target t the nonzero rows of part c of ``Y_l[:, R_{l+1}(p, t)]`` (an empty
   block, the explicit "nothing for you" marker, when no row has a nonzero) at once,
   before computing part c + 1: the peers start part c of layer l + 1 while this worker
   is still busy with layer l.
With one part this is the plain loop: send the layer, wait for all of it, compute.

Why every output is summed over the whole input in ascending neuron order, rather than
"local product now, remote products added later": splitting a sum changes its rounding,
and a Graph Challenge activation that is exactly zero in exact arithmetic can land
either side of zero depending on the order (seen: 1 row in 5,000 differs between float32
and float64). Summing in the reference's order makes every worker bit-for-bit equal to
``fsd reference`` in either dtype, for any partition, any P and any number of parts
(rows are independent, so cutting the batch changes nothing).

There is no global barrier: waits are point-to-point.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.base import Channel
from fsd_inference.channels.codec import Block
from fsd_inference.kernel import ColumnMap, LayerKernel, LayerWeights, Piece, get_kernel
from fsd_inference.kernel.scipy_kernel import assemble
from fsd_inference.partition.plan import LayerShard, WorkerShard


def part_bounds(batch: int, parts: int) -> np.ndarray:
    """Row boundaries of ``parts`` near-equal ranges of a ``batch`` (at most one part per
    row): every worker of a run computes the same, so parts line up across workers."""
    parts = max(1, min(parts, batch))
    return (np.arange(parts + 1, dtype=np.int64) * batch) // parts


def merge_columns(batch: int, neurons: int,
                  parts: Iterable[tuple[np.ndarray, sp.csr_matrix]], dtype: str
                  ) -> sp.csr_matrix:
    """The full ``batch x neurons`` matrix from every worker's ``(columns, y)``: the
    gather of the final layer, locally and in the cloud."""
    pieces = [Piece(sp.csr_matrix(y, dtype=dtype),
                    columns=ColumnMap.one_to_one(np.asarray(columns, dtype=np.int64)))
              for columns, y in parts]
    return assemble(batch, neurons, pieces).astype(dtype)


@dataclass(frozen=True)
class _Layer:
    """One layer's shard in the kernel's terms, derived once per run."""

    shard: LayerShard
    weights: LayerWeights
    local: ColumnMap  # own previous outputs -> input positions (unneeded ones: none)
    remote: dict[int, ColumnMap]  # source -> its block's columns -> input positions

    @classmethod
    def of(cls, shard: LayerShard, previous_width: int) -> _Layer:
        remote = {}
        for source, positions in shard.recv.items():
            if source in shard.expand:  # twins travel once: one column feeds several inputs
                columns = shard.expand[source]
                width = int(columns.max()) + 1 if columns.size else 0
                remote[source] = ColumnMap.gather(positions, columns, width)
            else:
                remote[source] = ColumnMap.one_to_one(positions)
        return cls(shard, LayerWeights(shard.weights),
                   ColumnMap.gather(shard.local_to, shard.local_from, previous_width), remote)

    def pieces(self, own: sp.csr_matrix, blocks: dict[int, Block]) -> list[Piece]:
        pieces = [Piece(own, columns=self.local)]
        for source, block in sorted(blocks.items()):
            if not block.empty:
                pieces.append(Piece(block.values, block.rows, self.remote[source]))
        return pieces


def _send(channel: Channel, layer: int, shard: LayerShard, y: sp.csr_matrix,
          part: int) -> None:
    for target, positions in shard.send.items():
        channel.send(layer, target, Block.from_columns(y[:, positions]), part)


def run_layers(
    shard: WorkerShard,
    y: sp.csr_matrix,
    channel: Channel,
    first: int = 1,
    last: int | None = None,
    on_layer: Callable[[int], None] | None = None,
    parts: int = 1,
    kernel: LayerKernel | None = None,
) -> sp.csr_matrix:
    """Run layers ``first..last`` (1-based, inclusive) and return this worker's Y_last.

    ``y`` holds this worker's columns of ``Y_{first-1}`` (its outputs of the previous
    layer, or its input columns when ``first == 1``), one row per input of the batch.
    ``parts``: row parts of the batch (the same on every worker of the run).
    """
    last = shard.depth if last is None else last
    kernel = kernel or get_kernel()
    bounds = part_bounds(y.shape[0], parts)
    ranges = list(itertools.pairwise(bounds.tolist()))
    ys = [sp.csr_matrix(y[a:b]) for a, b in ranges]
    if first <= last:
        started = time.perf_counter()
        for c, own in enumerate(ys):
            _send(channel, first, shard.layers[first - 1], own, c)
        channel.metrics.layer(first).compute_s += time.perf_counter() - started
    previous_width = (shard.input_columns.size if first == 1
                      else shard.layers[first - 2].outputs.size)
    for k in range(first, last + 1):
        layer = _Layer.of(shard.layers[k - 1], previous_width)
        previous_width = layer.shard.outputs.size
        m = channel.metrics.layer(k)
        for c, (a, b) in enumerate(ranges):
            waited = time.perf_counter()
            blocks = channel.receive(k, layer.shard.recv.keys(), part=c)
            started = time.perf_counter()
            m.wait_s += started - waited
            ys[c] = kernel.step(layer.pieces(ys[c], blocks), b - a, layer.weights, shard.bias)
            m.compute_s += time.perf_counter() - started
            if k < last:
                started = time.perf_counter()
                _send(channel, k + 1, shard.layers[k], ys[c], c)
                channel.metrics.layer(k + 1).compute_s += time.perf_counter() - started
        if on_layer is not None:
            on_layer(k)
    channel.flush()
    return ys[0] if len(ys) == 1 else sp.csr_matrix(sp.vstack(ys, format="csr"))
