"""One reference pass that every shape without neuron exchange is predicted from.

Data, pipeline and ``groups x stages`` hybrid shapes (one part per stage) move only
whole-row activations: none inside a stage, and at a stage boundary the nonzero rows of
a micro-batch. So a single pass of the reference kernel over the batch holds everything
their predictions need, for any number of candidate shapes at once (the planner asks
for dozens):

- per layer, the kernel's CPU seconds on the whole batch and each row's multiply-adds
  (its nonzeros times the fan-out of their neurons in W_k): a task's compute is the
  kernel time scaled by its rows' share of the multiply-adds, exactly as the neuron
  builder scales by a worker's share (:meth:`~fsd_inference.predict.counts.Counts.
  compute_s`);
- per layer, each row's nonzeros (checkpoints and the final activations' sizes);
- at every requested boundary (a stage ending at layer b) and row range, the block the
  stage's task would send, cut by the plan's own code and encoded by the channels' own
  codec: frames and bytes exact, its encoding and decoding CPU measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.codec import Block, decode_body, encode_body, encode_frames
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.reference import layer_step
from fsd_inference.partition.plan import plan_layers
from fsd_inference.strategy.owners import sub_network
from fsd_inference.strategy.shape import batch_order

# (boundary layer b, first row, end row): the block a stage ending at b sends for rows
# first..end-1 of the batch order (a micro-batch of a row group)
BlockKey = tuple[int, int, int]
DECODE_SAMPLE = 8  # decode one block in this many to measure decoding (as counts.py)


@dataclass(frozen=True)
class Encoded:
    """One encoded boundary block: exactly what the channel would carry."""

    frames: int
    frame_bytes: int
    last_frame: int
    rows: int  # nonzero rows it carries
    encode_s: float  # CPU seconds here to slice and encode it
    decode_s: float  # CPU seconds here to decode it (measured on a sample)


@dataclass
class Trace:
    neurons: int
    depth: int
    batch: int
    dtype: str
    layer_edges: np.ndarray  # (L,) nonzeros of W_k
    kernel_s: np.ndarray  # (L,) CPU seconds of the kernel on the whole batch
    row_flops: np.ndarray  # (L, B) multiply-adds of each row in layer k
    row_nnz: np.ndarray  # (L + 1, B) nonzeros of each row of Y_0 .. Y_L
    blocks: dict[BlockKey, Encoded]
    categories: int
    seconds: dict[str, float] = field(default_factory=dict)
    sampled_rows: int | None = None  # None: every row traced (predict/sampled.py)

    def __post_init__(self) -> None:
        # work[k, r]: kernel seconds of layers 1..k on rows 0..r-1 (each layer's seconds
        # shared by the rows' multiply-adds), so any (layers, rows) block is 4 lookups
        total = self.row_flops.sum(axis=1)
        rate = np.divide(self.kernel_s, total, out=np.zeros_like(total), where=total > 0)
        rows = np.zeros((self.depth + 1, self.batch + 1))
        rows[1:, 1:] = np.cumsum(self.row_flops * rate[:, None], axis=1)
        self._work = np.cumsum(rows, axis=0)

    def compute_s(self, first: int, last: int, rows: tuple[int, int]) -> float:
        """CPU seconds here for layers ``first..last`` (1-based) on rows ``a..b-1``."""
        a, b = rows
        w = self._work
        return float(w[last, b] - w[first - 1, b] - w[last, a] + w[first - 1, a])

    def nnz(self, layer: int, rows: tuple[int, int]) -> int:
        """Nonzeros of ``Y_layer`` (0: the input) on rows ``a..b-1``."""
        return int(self.row_nnz[layer, rows[0]:rows[1]].sum())


def boundary_columns(network: NetworkSource, layer: int) -> np.ndarray:
    """The columns of ``Y_layer`` a stage ending at ``layer`` sends the next one: what
    the communication plan computes for that boundary (twins once), by its own code on
    the two layers around it."""
    pair = sub_network(network, layer, layer + 1)
    owners = np.zeros((3, network.neurons), dtype=np.int32)
    owners[2] = 1
    shards = [shards for shards, _, _ in plan_layers(pair, owners, 2)][-1]
    return np.asarray(shards[0].send.get(1, np.zeros(0, dtype=np.int64)))


def _encode(y: sp.csr_matrix, key: BlockKey, execution: str, chunk_limit: int,
            decode: bool) -> Encoded:
    """``y``: the boundary's columns of Y_b, all rows."""
    layer, first, end = key
    tick = time.process_time()
    block = Block.from_columns(y[first:end])
    body = encode_body(block)
    frames = encode_frames(execution, layer + 1, 0, 1, body, chunk_limit)
    encode_s = time.process_time() - tick
    decode_s = math.nan
    if decode:
        tick = time.process_time()
        decode_body(body)
        decode_s = time.process_time() - tick
    return Encoded(len(frames), sum(len(f) for f in frames), len(frames[-1]),
                   int(block.rows.size), encode_s, decode_s)


def _with_decoding(blocks: dict[BlockKey, Encoded]) -> dict[BlockKey, Encoded]:
    """Decoding time of the blocks not timed, at the sample's seconds per byte."""
    timed = [b for b in blocks.values() if not math.isnan(b.decode_s)]
    size = sum(b.frame_bytes for b in timed)
    per_byte = sum(b.decode_s for b in timed) / size if size else 0.0
    return {key: b if not math.isnan(b.decode_s) else replace(
        b, decode_s=b.frame_bytes * per_byte) for key, b in blocks.items()}


def in_batch_order(inputs: sp.csr_matrix) -> sp.csr_matrix:
    """The inputs' rows in the order a run deals them to its groups and micro-batches
    (:func:`~fsd_inference.strategy.shape.batch_order`): a trace's rows, its row ranges
    and its block keys are positions in that order, as the tasks' rows are."""
    return sp.csr_matrix(inputs[batch_order(int(inputs.shape[0]))])


def trace_run(network: NetworkSource, inputs: sp.csr_matrix, dtype: str,
              wanted: Iterable[BlockKey], execution: str, chunk_limit: int,
              progress: Callable[[int, int], None] | None = None) -> Trace:
    """The reference pass (see the module docstring) over ``inputs`` as given (rows in
    the inputs' order); ``wanted``: boundary blocks (row ranges in the batch order)."""
    return trace_rows(network, in_batch_order(inputs), dtype, wanted, execution,
                      chunk_limit, progress)


def trace_rows(network: NetworkSource, rows: sp.csr_matrix, dtype: str,
               wanted: Iterable[BlockKey], execution: str, chunk_limit: int,
               progress: Callable[[int, int], None] | None = None) -> Trace:
    """:func:`trace_run` over ``rows`` already in the order the trace's positions mean."""
    inputs = rows
    started = time.perf_counter()
    by_layer: dict[int, list[BlockKey]] = {}
    for key in sorted(set(wanted)):
        by_layer.setdefault(key[0], []).append(key)
    depth, batch = network.depth, int(inputs.shape[0])
    y = sp.csr_matrix(inputs, dtype=np.dtype(dtype), copy=True)
    y.sort_indices()
    kernel_s = np.zeros(depth)
    edges = np.zeros(depth, dtype=np.int64)
    row_flops = np.zeros((depth, batch))
    row_nnz = np.zeros((depth + 1, batch), dtype=np.int64)
    blocks: dict[BlockKey, Encoded] = {}
    for k in range(1, depth + 1):
        row_nnz[k - 1] = np.diff(y.indptr)
        if k - 1 in by_layer:
            sent = sp.csr_matrix(y[:, boundary_columns(network, k - 1)])
            for key in by_layer[k - 1]:
                blocks[key] = _encode(sent, key, execution, chunk_limit,
                                      len(blocks) % DECODE_SAMPLE == 0)
        w = network.layer(k, dtype)
        edges[k - 1] = w.nnz
        fan_out = np.diff(sp.csr_matrix(w).indptr).astype(np.float64)
        row_ids = np.repeat(np.arange(batch), np.diff(y.indptr))
        row_flops[k - 1] = np.bincount(row_ids, weights=fan_out[y.indices], minlength=batch)
        tick = time.process_time()
        y = layer_step(y, w, network.bias)
        kernel_s[k - 1] = time.process_time() - tick
        if progress is not None:
            progress(k, depth)
    row_nnz[depth] = np.diff(y.indptr)
    categories = int(np.count_nonzero(np.asarray(y.sum(axis=1)).ravel()))
    return Trace(network.neurons, depth, batch, dtype, edges, kernel_s, row_flops, row_nnz,
                 _with_decoding(blocks), categories, {"trace_s": time.perf_counter() - started})
