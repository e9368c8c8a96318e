"""The streaming pass large layers get instead of Mt-KaHyPar: balance, terminals, its
traffic against random and against Mt-KaHyPar, and that small layers are unaffected."""

from __future__ import annotations

import numpy as np
import pytest

from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.partition import get_partitioner
from fsd_inference.partition.hypergraph import (
    EPSILON,
    STREAM_ABOVE,
    HypergraphPartitioner,
    max_part_weight,
)
from fsd_inference.partition.plan import plan_traffic
from fsd_inference.partition.stream import stream_partition


def test_terminals_pull_their_vertices_within_the_bound() -> None:
    """Vertices 0..5; vertex v's only net also holds terminal (v % 2), i.e. block v % 2.
    Each goes to its terminal's block until that block is full (bound 2): then elsewhere."""
    free, parts = 6, 3
    nets = [[v, free + v % 2] for v in range(free)]
    owners = stream_partition(nets, np.ones(free, dtype=np.int64), parts, bound=2, seed=0)
    assert np.bincount(owners, minlength=parts).max() <= 2
    pulled = sum(int(owners[v] == v % 2) for v in range(free))
    assert pulled == 4  # two per terminal block, the rest wherever there is room
    again = stream_partition(nets, np.ones(free, dtype=np.int64), parts, bound=2, seed=0)
    np.testing.assert_array_equal(owners, again)


def test_shared_nets_are_kept_together() -> None:
    """Three groups of four vertices, each group sharing one net: a bound of four per
    block leaves room for exactly one group each, and the pass finds it (no cut)."""
    nets = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    owners = stream_partition(nets, np.ones(12, dtype=np.int64), 3, bound=4, seed=3)
    assert all(len(set(owners[g * 4:(g + 1) * 4].tolist())) == 1 for g in range(3))
    assert sorted(set(owners.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("workers", [3, 8])
def test_streamed_layers_are_balanced_and_far_better_than_random(workers: int) -> None:
    network = generate(GeneratorParams(1024, 3, seed=2))
    streamed = HypergraphPartitioner(stream_above=0).partition(network, workers, seed=1)
    totals = [w.nnz for w in network.layers]
    plan = plan_traffic(network, streamed, workers)
    bounds = [max_part_weight(t, workers, EPSILON) for t in totals]
    assert (plan.work.max(axis=1) <= bounds).all()
    assert np.bincount(streamed[0], minlength=workers).max() <= max_part_weight(
        1024, workers, EPSILON)
    random = plan_traffic(network, get_partitioner("random").partition(network, workers, 1),
                          workers)
    multilevel = plan_traffic(network, HypergraphPartitioner().partition(network, workers, 1),
                              workers)
    assert plan.total_neurons < 0.5 * random.total_neurons
    assert multilevel.total_neurons <= plan.total_neurons  # what the shortcut costs


def test_layers_below_the_threshold_still_go_to_mt_kahypar() -> None:
    network = generate(GeneratorParams(256, 3, seed=4, bias=-0.3))
    assert network.neurons < STREAM_ABOVE
    default = HypergraphPartitioner().partition(network, 4, seed=2)
    explicit = HypergraphPartitioner(stream_above=10**9).partition(network, 4, seed=2)
    streamed = HypergraphPartitioner(stream_above=0).partition(network, 4, seed=2)
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, streamed)


def test_vertices_with_no_nets_are_placed_too() -> None:
    """Neurons that feed nothing appear in no net: they still get a block, within the bound."""
    nets = [[1, 3], [3, 4]]  # vertices 0, 2 and 5 are in no net
    for seed in range(5):
        owners = stream_partition(nets, np.ones(6, dtype=np.int64), 2, bound=4, seed=seed)
        assert owners.min() >= 0 and np.bincount(owners, minlength=2).max() <= 4
        # one pass: a net is cut only when its vertices met before they knew each other
        cut = sum(len({int(owners[v]) for v in net}) - 1 for net in nets)
        assert cut <= 1
