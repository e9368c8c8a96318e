"""A trace of the whole batch estimated from a row sample: the planner at any batch size.

:func:`~fsd_inference.predict.trace.trace_run` runs the reference over every row, which
is exact but costs the job's whole compute on one core: fine for ``fsd plan`` on a
laptop, too slow inside the Plan step (a Lambda invocation on the run's critical path)
for large networks. Rows of ``Y @ W`` are independent, so a trace over an evenly spaced
sample of rows predicts the rest:

- sample row ``i``, drawn at random from the ``i``-th of ``rows`` nearly equal ranges of
  the batch (:func:`split_evenly`), stands for the ``reps[i]`` rows of its range; its per-row
  multiply-adds and nonzeros are repeated over them;
- each layer's kernel seconds are a fixed part plus a part per multiply-add: the fixed
  part (the kernel call, arrays of the layer's width: about 1.5 ms a layer at 1024
  neurons, which a 1,024-row sample would otherwise scale tenfold) is measured on a pass
  over :data:`FIXED_ROWS` rows, the rest scaled by the multiply-adds the sample stands
  for;
- a boundary block over batch rows ``first..end-1`` is the sample's block over the
  sample rows in that range, encoded by the channel's codec, its body bytes and nonzero
  rows scaled by the block's batch rows over its sampled rows, and cut
  into frames by the codec's rule (:func:`~fsd_inference.channels.codec.frame_overhead`).

Assumptions (stated wherever a sampled prediction is shown): each sampled row is typical
of its range; a block whose range holds no sample row borrows the nearest one. Where
few rows carry most of the work (a network that keeps a few percent of its inputs alive)
the estimate is as noisy as the sample is small. With ``rows`` at least the batch
the result is :func:`trace_run`'s, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels.codec import frame_overhead
from fsd_inference.model.base import NetworkSource
from fsd_inference.predict.trace import BlockKey, Encoded, Trace, in_batch_order, trace_rows
from fsd_inference.strategy.shape import split_evenly

DEFAULT_SAMPLE_ROWS = 1024
FIXED_ROWS = 8  # a pass this small is the kernel's per-layer fixed cost


def sample_rows(batch: int, rows: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sampled row indices, the batch rows each stands for, their range starts): the
    batch cut into ``rows`` nearly equal ranges, each represented by one of its rows drawn
    at random (stratified: every part of the batch is sampled, and no period in the
    inputs' order lines up with the sample, as a fixed stride can: on the MNIST sample,
    every second row holds most of the rows a generated network keeps alive)."""
    bounds = split_evenly(batch, rows)
    starts, reps = bounds[:-1], np.diff(bounds)
    return starts + np.random.default_rng(seed).integers(0, reps), reps, starts


def _sample_range(starts: np.ndarray, first: int, end: int) -> tuple[int, int]:
    """Sample indices ``i0..i1-1`` whose ranges start inside batch rows ``first..end-1``;
    at least one (the range holding ``first``) when the block is narrower than a range."""
    i0 = int(np.searchsorted(starts, first, side="left"))
    i1 = int(np.searchsorted(starts, end, side="left"))
    if i1 <= i0:
        i0 = max(0, int(np.searchsorted(starts, first, side="right")) - 1)
        i1 = i0 + 1
    return i0, i1


def _scaled(block: Encoded, factor: float, overhead: int, chunk_limit: int) -> Encoded:
    """``block`` standing for ``factor`` times its rows: body bytes scaled, frames cut by
    the codec's rule (every frame carries ``overhead`` bytes of header)."""
    body = max(0, block.frame_bytes - block.frames * overhead)
    body = round(body * factor)
    room = chunk_limit - overhead
    frames = max(1, math.ceil(body / room))
    return Encoded(frames=frames, frame_bytes=body + frames * overhead,
                   last_frame=body - (frames - 1) * room + overhead,
                   rows=round(block.rows * factor), encode_s=block.encode_s * factor,
                   decode_s=block.decode_s * factor)


def sampled_trace(network: NetworkSource, inputs: sp.csr_matrix, dtype: str,
                  wanted: Iterable[BlockKey], execution: str, chunk_limit: int,
                  rows: int = DEFAULT_SAMPLE_ROWS) -> Trace:
    """The batch's trace from ``rows`` sampled rows (see the module docstring)."""
    batch = int(inputs.shape[0])
    wanted = sorted(set(wanted))
    inputs = in_batch_order(inputs)  # the sample's ranges are ranges of the batch order
    if rows >= batch or rows <= FIXED_ROWS:
        return trace_rows(network, inputs, dtype, wanted, execution, chunk_limit)
    index, reps, starts = sample_rows(batch, rows)
    mapped = {key: (key[0], *_sample_range(starts, key[1], key[2])) for key in wanted}
    sample = trace_rows(network, sp.csr_matrix(inputs[index]), dtype, set(mapped.values()),
                        execution, chunk_limit)
    overhead = frame_overhead(execution)
    blocks = {}
    for key, (layer, i0, i1) in mapped.items():
        factor = (key[2] - key[1]) / (i1 - i0)  # batch rows per sampled row of the block
        blocks[key] = _scaled(sample.blocks[(layer, i0, i1)], factor, overhead, chunk_limit)
    row_flops = np.repeat(sample.row_flops, reps, axis=1)
    sample_flops, batch_flops = sample.row_flops.sum(axis=1), row_flops.sum(axis=1)
    scale = np.divide(batch_flops, sample_flops, out=np.full_like(batch_flops, batch / rows),
                      where=sample_flops > 0)
    fixed = trace_rows(network, sp.csr_matrix(inputs[sample_rows(batch, FIXED_ROWS)[0]]),
                       dtype, (), execution, chunk_limit).kernel_s
    fixed = np.minimum(fixed, sample.kernel_s)
    kernel_s = fixed + (sample.kernel_s - fixed) * scale
    categorised = round(float(reps[sample.row_nnz[-1] > 0].sum()))
    return Trace(sample.neurons, sample.depth, batch, dtype, sample.layer_edges,
                  kernel_s, row_flops,
                  np.repeat(sample.row_nnz, reps, axis=1), blocks, categorised,
                  dict(sample.seconds), sampled_rows=rows)
