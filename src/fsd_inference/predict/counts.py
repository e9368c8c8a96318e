"""Exact work counts of a run: the plan and the codec applied to the real activations.

One pass of the reference kernel over the whole batch gives every layer's activations
Y_l (the distributed workers are bit-for-bit equal to it, so these are the values every
worker holds). For each layer, :mod:`.blocks` yields the blocks every worker sends,
equal to what :func:`fsd_inference.worker.outgoing` (the very function the worker loop
sends with) slices but without its per-block SciPy overhead (a sample is checked against
the worker's slicing on every run), and the channels' own codec functions encode them
(``encode_body``, ``encode_frames`` at the channel's chunk limit). No transport is
involved, so nothing here depends on timing: blocks, frames and their bytes per (layer,
source, target) are exact by construction; the channel's API calls follow in
:mod:`fsd_inference.predict.wire`.

Measured on the way, for the time model (CPU seconds of this process, so other load on
the machine does not inflate them): the kernel's time per layer, the encoding time of
every block, the worker's slicing and the decoding time of a sample of blocks (each
fitted linearly, in nonzeros and in bytes), and the cost of assembling a worker's input
per nonzero. Compute per worker and layer is its share of the layer's multiply-adds
(columns of Y it multiplies x rows of its weight slice), also exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.codec import Block, decode_body, encode_body, encode_frames
from fsd_inference.kernel.base import Piece
from fsd_inference.kernel.scipy_kernel import assemble
from fsd_inference.model.network import Network
from fsd_inference.model.reference import layer_step
from fsd_inference.partition.plan import CommPlan, WorkerShard
from fsd_inference.predict.blocks import (
    BlockMismatch,
    Group,
    layer_blocks,
    layer_groups,
    same_block,
)
from fsd_inference.predict.trace import in_batch_order

# Blocks per layer decoded (to fit the decoding cost) and sliced the worker's way (to check
# the block builder and fit the slicing cost), spread evenly over the layer's groups: a
# few hundred samples over a run fit two parameters, and sampling large blocks is costly.
SAMPLES_PER_LAYER = 8
ASSEMBLE_PROBES = 3  # layers on which assembling a full input is timed


@dataclass(frozen=True)
class LayerTraffic:
    """One layer's messages: one entry per (source, target) block, sorted by source."""

    src: np.ndarray  # int64
    dst: np.ndarray
    frames: np.ndarray  # frames of the block
    frame_bytes: np.ndarray  # bytes of all its frames
    last_frame: np.ndarray  # bytes of its last frame (the others are at the chunk limit)
    rows: np.ndarray  # input rows it carries (0: the empty "nothing for you" block)
    encode_s: np.ndarray  # sender CPU to produce it (slice once per group, encode per target)


@dataclass
class Counts:
    """Everything exact about a run, plus the CPU rates measured while counting."""

    workers: int
    neurons: int
    depth: int
    batch: int
    dtype: str
    execution: str
    chunk_limit: int
    plan: CommPlan
    layers: list[LayerTraffic]
    flops: np.ndarray  # (L, P) multiply-adds of each worker's product
    input_nnz: np.ndarray  # (L, P) nonzeros of each worker's assembled input
    output_nnz: np.ndarray  # (L, P) nonzeros of each worker's output
    kernel_s: np.ndarray  # (L,) CPU seconds of the reference kernel per layer
    kernel_flops: np.ndarray  # (L,) its multiply-adds
    assemble_s_per_nnz: float
    decode_fit: tuple[float, float]  # seconds = a + b * frame bytes
    categories: int
    seconds: dict[str, float] = field(default_factory=dict)

    def compute_s(self) -> np.ndarray:
        """(L, P) CPU seconds on this machine: kernel share + assembling the input."""
        share = np.divide(self.flops, self.kernel_flops[:, None],
                          out=np.zeros_like(self.flops, dtype=np.float64),
                          where=self.kernel_flops[:, None] > 0)
        return np.asarray(share * self.kernel_s[:, None]
                          + self.input_nnz * self.assemble_s_per_nnz)

    def decode_s(self, traffic: LayerTraffic) -> np.ndarray:
        """Receiver CPU per message, from the decoding times measured on a sample."""
        a, b = self.decode_fit
        return a + b * traffic.frame_bytes.astype(np.float64)


def _linear_fit(samples: list[tuple[int, float]]) -> tuple[float, float]:
    """Seconds = a + b * size, least squares over measured samples (a, b >= 0)."""
    if len(samples) < 2:
        return (samples[0][1], 0.0) if samples else (0.0, 0.0)
    sizes = np.array([s for s, _ in samples], dtype=np.float64)
    seconds = np.array([t for _, t in samples])
    if np.ptp(sizes) == 0:
        return float(seconds.mean()), 0.0
    slope, intercept = np.polyfit(sizes, seconds, 1)
    return max(0.0, float(intercept)), max(0.0, float(slope))


def _assemble_cost(y: sp.csr_matrix) -> float:
    """Seconds per nonzero to assemble a worker input (timed on the whole layer, by the
    SciPy kernel's assembly: the fused kernel reads the pieces in place, so this is an
    upper bound where it runs)."""
    batch, width = y.shape
    started = time.process_time()
    assemble(batch, width, [Piece(y)])
    return float(time.process_time() - started) / max(1, int(y.nnz))


FIELDS = ("src", "dst", "frames", "frame_bytes", "last_frame", "rows")


class _LayerCounter:
    """Counts one layer: every worker's outgoing blocks, each group encoded once.

    A group (targets with equal plan sets) gets the same block; its frames differ only
    in the header's target field, which has a fixed size, so their lengths are equal.
    The real worker encodes once per target, so every target is charged the encoding.
    The blocks come from :mod:`.blocks` (the worker's blocks without its per-block SciPy
    slicing); ``SAMPLES_PER_LAYER`` groups are also sliced the worker's way, which checks
    the block and times the slicing (fitted per nonzero, charged to every group's first
    target as before), and decoded, which times decoding.
    """

    def __init__(self, execution: str, chunk_limit: int) -> None:
        self.execution = execution
        self.chunk_limit = chunk_limit
        self.decode_samples: list[tuple[int, float]] = []
        self.slice_samples: list[tuple[int, float]] = []

    def layer(self, k: int, columns: sp.csc_matrix, owners_prev: np.ndarray,
              shards: list[WorkerShard]) -> tuple[LayerTraffic, np.ndarray]:
        """The layer's traffic, and each message's block nonzeros (for the slicing fit)."""
        groups = layer_groups(k, owners_prev, shards)
        per_group = np.zeros((len(groups), 5), dtype=np.int64)  # frames, size, last, rows, nnz
        encode = np.zeros(len(groups))
        every = max(1, len(groups) // SAMPLES_PER_LAYER)
        for i, (group, block) in enumerate(zip(groups, layer_blocks(columns, groups),
                                               strict=True)):
            sampled = i % every == 0
            if sampled:
                self._check_and_time(k, columns, owners_prev, group, block)
            tick = time.process_time()
            body = encode_body(block)
            frames = encode_frames(self.execution, k, group.source, group.targets[0], body,
                                   self.chunk_limit)
            encode[i] = time.process_time() - tick
            size = sum(len(f) for f in frames)
            per_group[i] = (len(frames), size, len(frames[-1]), block.rows.size,
                            block.values.nnz)
            if sampled:
                self._time_decode(body, size)
        fanout = np.array([len(g.targets) for g in groups], dtype=np.int64)
        expand = np.repeat(np.arange(len(groups)), fanout)
        first = np.zeros(expand.size, dtype=bool)
        first[np.cumsum(fanout) - fanout] = True
        src = np.array([g.source for g in groups], dtype=np.int64)
        dst = np.array([t for g in groups for t in g.targets], dtype=np.int64)
        arrays = dict(zip(FIELDS[2:], per_group[expand, :4].T, strict=True))
        traffic = LayerTraffic(src=src[expand], dst=dst, **arrays,
                               encode_s=encode[expand])
        return traffic, np.where(first, per_group[expand, 4], -1)

    def _check_and_time(self, k: int, columns: sp.csc_matrix, owners_prev: np.ndarray,
                        group: Group, block: Block) -> None:
        # the worker holds only its own columns and slices the block out of those
        own = columns[:, np.flatnonzero(owners_prev == group.source)]
        tick = time.process_time()
        real = Block.from_columns(own[:, group.positions])
        self.slice_samples.append((int(real.values.nnz), time.process_time() - tick))
        if not same_block(block, real):
            raise BlockMismatch(f"layer {k}, worker {group.source} -> {group.targets}: the "
                                f"counted block differs from the worker's slicing")

    def _time_decode(self, body: bytes, frame_bytes: int) -> None:
        tick = time.process_time()
        decode_body(body)
        self.decode_samples.append((frame_bytes, time.process_time() - tick))


def count_run(network: Network, inputs: sp.csr_matrix, owners: np.ndarray, plan: CommPlan,
              shards: list[WorkerShard], dtype: str, execution: str, chunk_limit: int,
              progress: Callable[[int, int], None] | None = None) -> Counts:
    """Run the reference once and count everything the workers would send (see module)."""
    started = time.perf_counter()
    weights = network.astype(dtype).layers
    # the tasks hold their rows in the batch order: the blocks they send are encoded so
    y = sp.csr_matrix(in_batch_order(inputs), dtype=np.dtype(dtype), copy=True)
    y.sort_indices()
    workers, depth = plan.workers, network.depth
    counter = _LayerCounter(execution, chunk_limit)
    layers: list[LayerTraffic] = []
    sliced: list[np.ndarray] = []  # per message: its block's nonzeros (-1: not charged)
    flops = np.zeros((depth, workers))
    input_nnz = np.zeros((depth, workers))
    output_nnz = np.zeros((depth, workers))
    kernel_s = np.zeros(depth)
    kernel_flops = np.zeros(depth)
    assemble_costs: list[float] = []
    probes = set(np.linspace(1, depth, min(ASSEMBLE_PROBES, depth)).astype(int).tolist())
    for k in range(1, depth + 2):
        columns = sp.csc_matrix(y)
        columns.sort_indices()
        column_nnz = np.diff(columns.indptr).astype(np.float64)
        if k > 1:
            output_nnz[k - 2] = np.bincount(owners[k - 1], weights=column_nnz,
                                            minlength=workers)
        if k > depth:
            break
        traffic, slice_nnz = counter.layer(k, columns, owners[k - 1], shards)
        layers.append(traffic)
        sliced.append(slice_nnz)
        w = weights[k - 1]
        kernel_flops[k - 1] = float(column_nnz @ np.diff(w.indptr))
        for shard in shards:
            part = shard.layers[k - 1]
            needed = column_nnz[part.inputs]
            flops[k - 1, shard.worker] = float(needed @ np.diff(part.weights.indptr))
            input_nnz[k - 1, shard.worker] = float(needed.sum())
        if k in probes:
            assemble_costs.append(_assemble_cost(y))
        tick = time.process_time()
        y = layer_step(y, w, network.bias)
        kernel_s[k - 1] = time.process_time() - tick
        if progress is not None:
            progress(k, depth)
    a, b = _linear_fit(counter.slice_samples)
    layers = [replace(t, encode_s=t.encode_s + np.where(nnz >= 0, a + b * nnz, 0.0))
              for t, nnz in zip(layers, sliced, strict=True)]
    categories = int(np.count_nonzero(np.asarray(y.sum(axis=1)).ravel()))
    return Counts(
        workers=workers, neurons=network.neurons, depth=depth, batch=int(inputs.shape[0]),
        dtype=dtype, execution=execution, chunk_limit=chunk_limit, plan=plan, layers=layers,
        flops=flops, input_nnz=input_nnz, output_nnz=output_nnz, kernel_s=kernel_s,
        kernel_flops=kernel_flops,
        assemble_s_per_nnz=float(np.median(assemble_costs)) if assemble_costs else 0.0,
        decode_fit=_linear_fit(counter.decode_samples), categories=categories,
        seconds={"count_s": time.perf_counter() - started})
