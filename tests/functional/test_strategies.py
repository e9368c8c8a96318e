"""Every strategy equals the reference, bit for bit, through the one orchestration path.

``fsd infer`` runs the serverless steps (plan, worker, gather, cleanup) on local
processes; these tests run every strategy's shape through it and compare raw bytes of
the final activations with the single-process reference. The state machine runs the
same steps on the embedded AWS (tests/functional/test_app.py).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.channels import ChannelConfig
from fsd_inference.config import AwsConfig
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import InferenceResult, infer
from fsd_inference.model.tsv import read_input


@functools.cache
def problem() -> tuple[Network, sp.csr_matrix]:
    return generate(GeneratorParams(1024, 9, seed=5)), read_input(sample_input_path(),
                                                                   neurons=1024)[:700]


@functools.cache
def expected(dtype: str) -> InferenceResult:
    network, x = problem()
    result = infer(network, x, dtype)
    assert 0 < result.categories.size < x.shape[0]
    return result


def assert_identical(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    a.sort_indices()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.data.dtype == b.data.dtype and a.data.tobytes() == b.data.tobytes()


SHAPES = [
    # (strategy, tasks, extra options, dtype, expected (groups, stages, parts))
    ("neuron", 3, {}, "float32", (1, 1, 3)),
    ("data", 3, {}, "float32", (3, 1, 1)),
    ("data", 2, {}, "float64", (2, 1, 1)),
    ("pipeline", 3, {"microbatches": 5}, "float64", (1, 3, 1)),
    ("pipeline", 2, {"microbatches": 1}, "float32", (1, 2, 1)),
    ("hybrid", 4, {"groups": 2}, "float32", (2, 1, 2)),  # groups of neuron-parallel workers
    ("hybrid", 4, {"groups": 2, "stages": 2, "microbatches": 3}, "float64", (2, 2, 1)),
    ("hybrid", 8, {"groups": 2, "stages": 2}, "float64", (2, 2, 2)),  # all three at once
]


@pytest.mark.parametrize(("strategy", "tasks", "options", "dtype", "summary"), SHAPES,
                         ids=[f"{s}-{t}-{'-'.join(map(str, o.values()))}-{d}"
                              for s, t, o, d, _ in SHAPES])
def test_every_strategy_matches_the_reference(strategy: str, tasks: int,
                                              options: dict[str, int], dtype: str,
                                              summary: tuple[int, int, int]) -> None:
    network, x = problem()
    result = run_inference(network, x, InferOptions(workers=tasks, strategy=strategy,
                                                    partition="random", dtype=dtype,
                                                    **options))
    shape = result.run.shape
    assert (shape.groups, len(shape.stages), shape.stages[0].parts) == summary
    np.testing.assert_array_equal(result.categories, expected(dtype).categories)
    assert_identical(result.activations, expected(dtype).activations)
    per_worker = result.metrics_document()["per_worker"]
    assert len(per_worker) == tasks
    sent = result.metrics_document()["summary"]["totals"].get("messages_sent", 0)
    if strategy == "data":
        assert sent == 0  # groups never talk
    if len(shape.stages) > 1:  # stage boundaries travel once per micro-batch
        assert sent >= (len(shape.stages) - 1) * shape.microbatches * shape.groups


@pytest.mark.parametrize("channel", ["queue", "object"])
def test_a_pipeline_streams_over_the_cloud_channels(aws: AwsConfig, channel: str) -> None:
    network, x = problem()
    options = InferOptions(workers=3, strategy="pipeline", microbatches=4, channel=channel,
                           partition="random",
                           config=ChannelConfig(receive_timeout_s=60, aws=aws))
    result = run_inference(network, x, options)
    assert_identical(result.activations, expected("float64").activations)
