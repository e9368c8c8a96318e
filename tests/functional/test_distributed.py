"""Distributed inference over the memory channel equals the reference, bit for bit.

Workers are real OS processes exchanging encoded frames, as in a cloud run. They compute
with the default (fused) kernel; the expected activations come from SciPy's arithmetic
(``infer`` with the SciPy kernel), the independent check.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference import worker
from fsd_inference.app.infer import InferOptions, WorkerFailed, run_inference
from fsd_inference.channels.base import ChannelConfig
from fsd_inference.channels.faults import Faults, faulty_factory
from fsd_inference.channels.memory import MemoryTransport
from fsd_inference.channels.null import NullTransport
from fsd_inference.cloud.settings import ENV_LAMBDA_MEMORY
from fsd_inference.exceptions import ConfigError
from fsd_inference.kernel import Piece
from fsd_inference.kernel.base import join_rows
from fsd_inference.kernel.fused import FusedKernel
from fsd_inference.kernel.scipy_kernel import ScipyKernel
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.network import Network
from fsd_inference.model.reference import InferenceResult
from fsd_inference.model.reference import infer as infer_with
from fsd_inference.model.tsv import read_input
from fsd_inference.partition import PARTITIONERS
from fsd_inference.partition.cache import ownership
from fsd_inference.partition.plan import build_plan
from fsd_inference.worker import run_layers


@functools.cache
def mnist(rows: int, neurons: int = 1024) -> sp.csr_matrix:
    images = read_input(sample_input_path(), neurons=1024)[:rows]
    return images if neurons == 1024 else upsample(images, neurons)


def infer(net: Network, x: sp.csr_matrix, dtype: str = "float64") -> InferenceResult:
    """The single-process reference computed by SciPy."""
    return infer_with(net, x, dtype, kernel=ScipyKernel())


@functools.cache
def network(neurons: int, layers: int, seed: int = 3, bias: float | None = None) -> Network:
    return generate(GeneratorParams(neurons, layers, seed, bias=bias))


def assert_identical(result_activations: sp.csr_matrix, expected: sp.csr_matrix) -> None:
    """Same sparsity pattern and the same bits in every stored value."""
    a, b = sp.csr_matrix(result_activations), sp.csr_matrix(expected)
    a.sort_indices()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.data.dtype == b.data.dtype
    assert a.data.tobytes() == b.data.tobytes()


@pytest.mark.parametrize("partition", sorted(PARTITIONERS))
@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8])
def test_memory_channel_matches_reference_1024(partition: str, workers: int) -> None:
    net, x = network(1024, 16), mnist(600)
    dtype = "float32" if workers % 2 else "float64"  # both dtypes across the grid
    expected = infer(net, x, dtype)
    assert 0 < expected.categories.size < x.shape[0]  # a non-trivial answer
    result = run_inference(net, x, InferOptions(workers=workers, partition=partition,
                                                dtype=dtype))
    np.testing.assert_array_equal(result.categories, expected.categories)
    assert_identical(result.activations, expected.activations)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_memory_channel_matches_reference_4096(dtype: str) -> None:
    net, x = network(4096, 6), mnist(150, 4096)
    expected = infer(net, x, dtype)
    result = run_inference(net, x, InferOptions(workers=3, partition="random", dtype=dtype))
    np.testing.assert_array_equal(result.categories, expected.categories)
    assert_identical(result.activations, expected.activations)


def test_more_workers_than_neurons_leaves_some_idle() -> None:
    net = network(32, 4, bias=-0.3)
    x = sp.random(50, 32, density=0.4, format="csr", random_state=1) * 4
    expected = infer(net, x)
    result = run_inference(net, x, InferOptions(workers=34, partition="contiguous"))
    owners = ownership(net, "contiguous", 34).owners
    owned = [(owners[-1] == p).sum() for p in range(34)]
    assert min(owned) == 0  # some workers own nothing and still take part
    np.testing.assert_array_equal(result.categories, expected.categories)


def test_duplicated_reordered_and_delayed_messages_change_nothing() -> None:
    net, x = network(1024, 10), mnist(400)
    expected = infer(net, x)
    faults = Faults(duplicate=0.3, delay=0.3, delay_s=0.1, shuffle=True, seed=7)
    result = run_inference(
        net, x, InferOptions(workers=4, partition="random"),
        transport_factory=faulty_factory(MemoryTransport, faults),
    )
    np.testing.assert_array_equal(result.categories, expected.categories)
    assert_identical(result.activations, expected.activations)
    totals = result.metrics_document()["summary"]["totals"]
    assert totals["duplicates_dropped"] > 0  # the faults really happened
    assert totals["messages_received"] == totals["messages_sent"]


def test_a_lost_message_times_out_naming_worker_layer_and_source() -> None:
    net, x = network(1024, 6), mnist(200)
    plan, _ = build_plan(net, ownership(net, "random", 3).owners, 3)
    # a pair that really exchanges data in the last layer: no worker waits on p after it,
    # so p's timeout is the only failure (a drop in an earlier layer also stalls the
    # workers waiting on p's next layer, and which of the two timeouts is reported
    # first is then a race decided by the receive's polling)
    q, p = map(int, np.argwhere(plan.volume[5] > 0)[0])
    faults = Faults(drop=frozenset({(6, q, p)}))
    options = InferOptions(workers=3, partition="random",
                           config=ChannelConfig(receive_timeout_s=2.0, poll_s=0.2))
    with pytest.raises(WorkerFailed, match=rf"worker {p}, layer 6: timed out after 2 s "
                                           rf"waiting for source worker\(s\) \[{q}\]"):
        run_inference(net, x, options,
                      transport_factory=faulty_factory(MemoryTransport, faults))


@pytest.mark.parametrize(("strategy", "workers"), [("data", 1), ("neuron", 2)])
def test_tasks_on_two_kernel_threads_match_the_reference(strategy: str, workers: int) -> None:
    """Two kernel threads per task cut every layer into row blocks: a data task hands
    them to its next layer as they are, a neuron task joins them for its sends."""
    net, x = network(1024, 6), mnist(1500)
    options = InferOptions(workers=workers, strategy=strategy, threads=2)
    result = run_inference(net, x, options)
    expected = infer(net, x)
    np.testing.assert_array_equal(result.categories, expected.categories)
    assert_identical(result.activations, expected.activations)


def test_a_task_joins_its_row_blocks_only_where_it_must(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task of one slot (nothing to send, no column map) keeps the kernel's row blocks
    from layer to layer and makes one matrix of them once, at the end."""
    net, x = network(1024, 6), mnist(1500)
    _, shards = build_plan(net, np.zeros((net.depth + 1, net.neurons), dtype=np.int64), 1)
    kernel = FusedKernel(2)
    joins: list[int] = []

    def counted(pieces: list[Piece], batch: int) -> sp.csr_matrix:
        joins.append(len(pieces))
        return join_rows(pieces, batch)

    monkeypatch.setattr(worker, "join_rows", counted)
    channel = NullTransport("fsd-test", 1, ChannelConfig()).channel(0)
    y = run_layers(shards[0], sp.csr_matrix(x, dtype=np.float64), channel, kernel=kernel)
    assert joins == [8]  # once, of 2 threads x 4 blocks
    assert_identical(y, infer(net, x).activations)


@pytest.mark.parametrize(("workers", "parts"), [(1, 3), (2, 2), (3, 5), (5, 4), (8, 7)])
def test_overlapped_parts_match_reference(workers: int, parts: int) -> None:
    net, x = network(1024, 12), mnist(500)
    dtype = "float32" if parts % 2 else "float64"
    expected = infer(net, x, dtype)
    result = run_inference(net, x, InferOptions(workers=workers, partition="random",
                                                dtype=dtype, microbatches=parts))
    np.testing.assert_array_equal(result.categories, expected.categories)
    assert_identical(result.activations, expected.activations)
    totals = result.metrics_document()["summary"]["totals"]
    # messages with one part per layer
    pairs = int(sum(result.metrics_document()["plan"]["messages_per_layer"]))
    assert totals["messages_sent"] >= pairs * parts  # every part travels on its own


def test_parts_under_latency_reordering_and_duplicates_change_nothing() -> None:
    net, x = network(1024, 8), mnist(300)
    expected = infer(net, x)
    faults = Faults(duplicate=0.2, delay=0.3, delay_s=0.05, shuffle=True, seed=3,
                    latency_s=0.01)
    result = run_inference(
        net, x, InferOptions(workers=4, partition="random", microbatches=3),
        transport_factory=faulty_factory(MemoryTransport, faults),
    )
    assert_identical(result.activations, expected.activations)
    assert result.metrics_document()["summary"]["totals"]["duplicates_dropped"] > 0


def test_one_row_per_part_and_the_scipy_kernel_in_the_workers() -> None:
    net, x = network(1024, 5), mnist(3)
    expected = infer(net, x, "float32")
    result = run_inference(net, x, InferOptions(workers=3, partition="random", microbatches=3,
                                                dtype="float32", kernel="scipy"))
    assert_identical(result.activations, expected.activations)
    with pytest.raises(ConfigError, match="3 rows: use at most 3"):
        run_inference(net, x, InferOptions(workers=3, partition="random", microbatches=8))


def test_tasks_see_the_environment_of_the_run_not_of_the_fork_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Task processes are forks of a server started by an earlier run: what the parent
    changed in its environment since (here the memory size a worker records in its
    metrics document) must still reach them, as it would a spawned process."""
    net, x = network(1024, 4), mnist(100)
    run_inference(net, x, InferOptions(workers=2))  # the fork server is running now
    monkeypatch.setenv(ENV_LAMBDA_MEMORY, "1769")
    result = run_inference(net, x, InferOptions(workers=2))
    assert result.metrics["lambda"]["worker"]["memory_mb"] == 1769
    monkeypatch.delenv(ENV_LAMBDA_MEMORY)
    result = run_inference(net, x, InferOptions(workers=2))
    assert result.metrics["lambda"]["worker"]["memory_mb"] == 0
