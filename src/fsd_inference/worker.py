"""The worker loop of one task, channel-agnostic (DESIGN sections 2 and 2a).

A task holds its slot's shard (partition/plan.py) and runs layers ``first..last`` on its
rows, cut into ``parts`` row slices (the micro-batches of strategy/shape.py, identical
on every task of a row group, so parts line up). Messages are keyed by the step
(layer, part) and the source (channels/codec.py). One *step* (layer k, part c):

1. receive part c of layer k from every source the plan names (early blocks for later
   steps are buffered by the channel, duplicates dropped, every wait bounded);
2. compute rows c of the task's columns of ``Y_k`` with the layer kernel, straight from
   the pieces: its own columns of ``Y_{k-1}`` and every peer's block, merged by the
   kernel in ascending global neuron order; the kernel also hands back the columns some
   target is sent, taken from each row's sums as it computes them;
3. send every target the nonzero rows of part c of ``Y_k[:, R_{k+1}(p, t)]`` at once
   (an empty block, the explicit "nothing for you" marker, when no row has a nonzero),
   so the peers start step (k + 1, c) while this task computes its next step.

Step order. Layer-major (for k: for c) overlaps a layer's exchange with the compute of
its later parts: the choice inside one stage. Part-major (for c: for k) pushes part 0
through every layer first, so a pipeline's next stage starts on it while this stage
computes part 1: the choice when the shape has several stages. With one part both are
the plain loop: send the layer, wait for all of it, compute.

A task that ends a pipeline stage sends, after its last layer, what the next stage's
first layer needs (the send half of layer ``last + 1``); a task of a later stage owns
none of ``Y_{first-1}`` and starts from what it receives.

Why every output is summed over the whole input in ascending neuron order, rather than
"local product now, remote products added later": splitting a sum changes its rounding,
and a Graph Challenge activation that is exactly zero in exact arithmetic can land
either side of zero depending on the order (seen: 1 row in 5,000 differs between float32
and float64). Summing in the reference's order makes every task bit-for-bit equal to
``fsd reference`` in either dtype, for any partition, any shape and any number of parts
(rows are independent, so cutting the batch changes nothing).

There is no global barrier: waits are point-to-point.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.base import Channel
from fsd_inference.channels.codec import Block
from fsd_inference.kernel import ColumnMap, LayerKernel, LayerWeights, Piece, get_kernel
from fsd_inference.kernel.base import join_rows
from fsd_inference.kernel.scipy_kernel import assemble
from fsd_inference.partition.plan import LayerShard, WorkerShard

Order = Literal["layer", "part"]
Rows: TypeAlias = sp.csr_matrix | list[Piece]  # one matrix, or a kernel's row blocks


def part_bounds(batch: int, parts: int) -> np.ndarray:
    """Row boundaries of ``parts`` near-equal ranges of a ``batch`` (at most one part per
    row): every task of a run computes the same, so parts line up across tasks."""
    parts = max(1, min(parts, batch))
    return (np.arange(parts + 1, dtype=np.int64) * batch) // parts


def place_rows(batch: int, neurons: int,
               parts: Iterable[tuple[np.ndarray, np.ndarray, sp.csr_matrix]], dtype: str
               ) -> sp.csr_matrix:
    """The full ``batch x neurons`` matrix from ``(row ids, column ids, values)`` pieces:
    the gather of the final layer, locally and in the cloud. A piece's row ids may come
    in any order (a group holds its rows in the batch order, strategy/shape.py)."""
    pieces = [Piece(sp.csr_matrix(y, dtype=dtype), np.asarray(rows, dtype=np.int64),
                    ColumnMap.one_to_one(np.asarray(columns, dtype=np.int64)))
              for rows, columns, y in parts]
    return assemble(batch, neurons, pieces).astype(dtype)


def sent_columns(layer: LayerShard) -> np.ndarray:
    """Every position of the previous layer's outputs that some target is sent."""
    if not layer.send:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(list(layer.send.values())))


def outgoing(layer: LayerShard, y: sp.csr_matrix, columns: np.ndarray | None = None
             ) -> Iterator[tuple[tuple[int, ...], Block]]:
    """The blocks a task sends for one layer: ``(target slots, block)``, in send order.

    Targets whose plan sets are equal (frequent when a worker owns few neurons) get the
    same block, sliced once. ``y`` holds the task's columns of the previous layer, or
    only ``columns`` of them (:func:`sent_columns`, as the kernel extracts them); a CSC
    matrix works too (fsd_inference.predict counts every worker's blocks from the
    reference's activations through this same function, without any transport).
    """
    groups: dict[bytes, list[int]] = {}
    for target, positions in layer.send.items():
        groups.setdefault(positions.tobytes(), []).append(target)
    for targets in groups.values():
        wanted = layer.send[targets[0]]
        if columns is not None:
            if np.array_equal(wanted, columns):  # every sent column: y as it is
                yield tuple(targets), Block.from_columns(y)
                continue
            wanted = np.searchsorted(columns, wanted)
        yield tuple(targets), Block.from_columns(y[:, wanted])


@dataclass(frozen=True)
class _Layer:
    """One layer's shard in the kernel's terms, derived once per run."""

    shard: LayerShard
    weights: LayerWeights
    # own previous outputs -> input positions (unneeded ones: none); None when output c
    # is position c (a data task holds every neuron), so the kernel needs no merge
    local: ColumnMap | None
    remote: dict[int, ColumnMap]  # source slot -> its block's columns -> input positions

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
        local = ColumnMap.gather(shard.local_to, shard.local_from, previous_width)
        return cls(shard, LayerWeights(shard.weights), None if local.identity else local,
                   remote)

    def pieces(self, own: Rows, blocks: dict[int, Block]) -> list[Piece]:
        remote = [Piece(block.values, block.rows, self.remote[source])
                  for source, block in sorted(blocks.items()) if not block.empty]
        if isinstance(own, list):  # the previous step's row blocks (kernel.step_pieces),
            # read as they are, through the map: no join, no copy
            return [Piece(piece.values, piece.rows, self.local) for piece in own] + remote
        return [Piece(own, columns=self.local), *remote]


class _Exchange:
    """The task's side of the channel: slots of its row group on the wire as tasks
    ``offset + slot``, time spent sending counted into the layer's compute."""

    def __init__(self, channel: Channel, offset: int) -> None:
        self.channel = channel
        self.offset = offset

    def send(self, k: int, layer: LayerShard, y: sp.csr_matrix, part: int,
             columns: np.ndarray | None = None) -> None:
        started = time.perf_counter()
        for targets, block in outgoing(layer, y, columns):
            for target in targets:
                self.channel.send(k, self.offset + target, block, part)
        self.channel.metrics.layer(k).compute_s += time.perf_counter() - started

    def receive(self, k: int, sources: Iterable[int], part: int) -> dict[int, Block]:
        waited = time.perf_counter()
        received = self.channel.receive(k, [self.offset + q for q in sources], part=part)
        self.channel.metrics.layer(k).wait_s += time.perf_counter() - waited
        return {task - self.offset: block for task, block in received.items()}


def steps(first: int, last: int, parts: int, order: Order) -> list[tuple[int, int]]:
    """The (layer, part) steps of a task, in the order it computes them."""
    if order == "layer":
        return [(k, c) for k in range(first, last + 1) for c in range(parts)]
    return [(k, c) for c in range(parts) for k in range(first, last + 1)]


def run_task(
    shard: WorkerShard,
    y: sp.csr_matrix,
    channel: Channel,
    first: int,
    last: int,
    bounds: np.ndarray,
    *,
    order: Order = "layer",
    send_tail: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    offset: int = 0,
    kernel: LayerKernel | None = None,
) -> sp.csr_matrix:
    """Run layers ``first..last`` (1-based, inclusive) on the rows of ``y`` and return
    this task's ``Y_last``.

    ``y`` holds the task's columns of ``Y_{first-1}`` (its outputs of the previous layer,
    its input columns when ``first == 1``, none at the start of a later pipeline stage).
    ``bounds`` cut its rows into parts (the same on every task of the row group);
    ``order`` is the step order (module doc); ``send_tail``: this task ends a pipeline
    stage; ``on_step(layer, part)`` is called after each computed step; ``offset``: the
    group's first task (the shard names peers by slot).
    """
    kernel = kernel or get_kernel()
    exchange = _Exchange(channel, offset)
    ranges = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    ys: list[Rows] = [sp.csr_matrix(y[a:b]) for a, b in ranges]
    if first > last:
        return y
    for c, own in enumerate(ys):  # what the first layer needs from this task
        exchange.send(first, shard.layers[first - 1], own, c)
    previous_width = (shard.input_columns.size if first == 1
                      else shard.layers[first - 2].outputs.size)
    layers: dict[int, _Layer] = {}
    sends: dict[int, np.ndarray] = {}  # layer -> the output columns its targets get
    for k in range(first, last + 1):
        layers[k] = _Layer.of(shard.layers[k - 1], previous_width)
        previous_width = layers[k].shard.outputs.size
        if (k < last or send_tail) and shard.layers[k].send:
            sends[k] = sent_columns(shard.layers[k])
    for k, c in steps(first, last, len(ranges), order):
        layer = layers[k]
        a, b = ranges[c]
        blocks = exchange.receive(k, layer.shard.recv.keys(), c)
        started = time.perf_counter()
        # the kernel's row blocks stay as they are until the end (with several kernel
        # threads a join is a copy of the layer's whole output); what the targets get,
        # the kernel takes from the sums as it computes them
        pieces = layer.pieces(ys[c], blocks)
        if k in sends:
            ys[c], sent = kernel.step_extract(pieces, b - a, layer.weights, shard.bias,
                                              sends[k])
            channel.metrics.layer(k).compute_s += time.perf_counter() - started
            exchange.send(k + 1, shard.layers[k], sent, c, sends[k])
        else:
            ys[c] = kernel.step_pieces(pieces, b - a, layer.weights, shard.bias)
            channel.metrics.layer(k).compute_s += time.perf_counter() - started
        if on_step is not None:
            on_step(k, c)
    channel.flush()
    joined = [_joined(y_c, b - a) for y_c, (a, b) in zip(ys, ranges, strict=True)]
    return joined[0] if len(joined) == 1 else sp.csr_matrix(sp.vstack(joined, format="csr"))


def _joined(y: Rows, batch: int) -> sp.csr_matrix:
    return y if not isinstance(y, list) else join_rows(y, batch)


def run_layers(shard: WorkerShard, y: sp.csr_matrix, channel: Channel, first: int = 1,
               last: int | None = None, on_layer: Callable[[int], None] | None = None,
               parts: int = 1, kernel: LayerKernel | None = None) -> sp.csr_matrix:
    """One row group, one stage: layers ``first..last`` in ``parts`` row parts,
    layer-major (tests and benchmarks of the loop itself)."""
    last = shard.depth if last is None else last
    count = part_bounds(y.shape[0], parts).size - 1

    def step_done(k: int, c: int) -> None:
        if on_layer is not None and c == count - 1:
            on_layer(k)

    return run_task(shard, y, channel, first, last, part_bounds(y.shape[0], parts),
                    on_step=step_done, kernel=kernel)


__all__: Sequence[str] = ("outgoing", "part_bounds", "place_rows", "run_layers", "run_task",
                          "steps")
