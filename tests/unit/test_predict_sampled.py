"""The row-sampled trace (predict/sampled.py) against the exact one on the same network.

Exactness where nothing is sampled, and, for a sample of a quarter of the batch, every
quantity the shaped predictor reads (multiply-adds, nonzeros, boundary blocks, the
categorised rows) within a tolerance of the exact trace's: the rows of ``Y @ W`` are
independent, so a sample of neighbouring rows must predict their totals. Timings (the
kernel's, encoding's) are measured, so they are compared only loosely.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import read_input
from fsd_inference.predict.sampled import sample_rows, sampled_trace
from fsd_inference.predict.shaped_predict import wanted_blocks
from fsd_inference.predict.trace import Trace, trace_run
from fsd_inference.strategy import compile_shape

ROWS = 2000
EXECUTION = "fsd-20260101-000000-000000"


@pytest.fixture(scope="module")
def job() -> tuple[Network, sp.csr_matrix, list[tuple[int, int, int]]]:
    network = generate(GeneratorParams(1024, 12, seed=4))
    inputs = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:ROWS])
    shapes = [compile_shape("pipeline", 3, 12, ROWS, microbatches=4),
              compile_shape("hybrid", 4, 12, ROWS, groups=2, stages=2, microbatches=5)]
    keys = [key for shape in shapes for key in wanted_blocks(shape, ROWS)]
    return network, inputs, keys


@pytest.fixture(scope="module")
def exact(job: tuple[Network, sp.csr_matrix, list[tuple[int, int, int]]]) -> Trace:
    network, inputs, keys = job
    return trace_run(network, inputs, "float64", keys, EXECUTION, 1 << 40)


def test_sample_rows_cover_the_batch_once() -> None:
    index, reps, starts = sample_rows(1003, 10)
    assert reps.sum() == 1003 and reps.max() - reps.min() <= 1
    assert np.all((starts <= index) & (index < starts + reps))  # each inside its range


def test_a_sample_as_large_as_the_batch_is_the_exact_trace(job, exact: Trace) -> None:
    network, inputs, keys = job
    again = sampled_trace(network, inputs, "float64", keys, EXECUTION, 1 << 40, rows=ROWS)
    assert again.sampled_rows is None
    np.testing.assert_array_equal(again.row_flops, exact.row_flops)
    np.testing.assert_array_equal(again.row_nnz, exact.row_nnz)
    assert again.categories == exact.categories
    assert {k: (b.frames, b.frame_bytes, b.rows) for k, b in again.blocks.items()} == \
        {k: (b.frames, b.frame_bytes, b.rows) for k, b in exact.blocks.items()}


def _relative(estimate: float, truth: float) -> float:
    return abs(estimate - truth) / truth


def test_a_quarter_of_the_rows_predicts_the_batch(job, exact: Trace) -> None:
    """Totals over the layers (what a task's compute and traffic add up): this network
    keeps 3.5% of its inputs alive, concentrated in few rows, so single late layers are
    noisy at any small sample; their sums are not."""
    network, inputs, keys = job
    sampled = sampled_trace(network, inputs, "float64", keys, EXECUTION, 1 << 40, rows=500)
    assert sampled.sampled_rows == 500 and sampled.batch == ROWS
    assert sampled.row_flops.shape == exact.row_flops.shape
    assert _relative(sampled.row_flops.sum(), exact.row_flops.sum()) < 0.1
    assert _relative(sampled.row_nnz.sum(), exact.row_nnz.sum()) < 0.1
    assert _relative(sampled.row_nnz[1].sum(), exact.row_nnz[1].sum()) < 0.05  # dense early
    assert _relative(sampled.categories, exact.categories) < 0.25
    assert set(sampled.blocks) == set(exact.blocks)
    for name in ("frame_bytes", "rows"):
        total = sum(getattr(b, name) for b in sampled.blocks.values())
        assert _relative(total, sum(getattr(b, name) for b in exact.blocks.values())) < 0.15
    # the kernel's seconds are measured, on another pass: the same order, not equal
    assert 0.2 < sampled.kernel_s.sum() / exact.kernel_s.sum() < 5
