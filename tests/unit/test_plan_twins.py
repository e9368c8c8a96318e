"""Twin folding: neurons with identical weight columns travel once, results unchanged."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.network import Network
from fsd_inference.partition.plan import build_plan, twin_classes


def test_twin_classes_group_identical_columns_only() -> None:
    dense = np.array([
        [1.0, 1.0, 0.0, 1.0],
        [0.0, 0.0, 2.0, 2.0],
        [3.0, 3.0, 0.0, 0.0],
    ])
    classes = twin_classes(sp.csr_matrix(dense), 4)
    assert classes[0] == classes[1]  # identical columns
    assert len({classes[0], classes[2], classes[3]}) == 3  # same rows but other values
    assert twin_classes(None, 4).tolist() == [0, 1, 2, 3]


def test_generated_blocks_of_two_are_twins() -> None:
    net = generate(GeneratorParams(64, 3, seed=1, bias=-0.3))
    classes = twin_classes(net.layers[0], 64)
    assert np.bincount(np.bincount(classes)).tolist() == [0, 0, 32]  # 32 pairs


def test_plan_sends_one_column_per_twin_class_and_expands_exactly() -> None:
    net = generate(GeneratorParams(64, 4, seed=2, bias=-0.3))
    owners = np.tile(np.arange(64) % 3, (net.depth + 1, 1))
    plan, shards = build_plan(net, owners, 3)
    for k in range(2, net.depth + 1):
        classes = twin_classes(net.layers[k - 2], 64)
        for p, shard in enumerate(shards):
            layer = shard.layers[k - 1]
            for q, positions in layer.recv.items():
                needed = layer.inputs[positions]
                sent = shards[q].layers[k - 2].outputs[shards[q].layers[k - 1].send[p]]
                assert plan.copies[k - 1, q, p] == needed.size
                assert plan.volume[k - 1, q, p] == np.unique(classes[needed]).size == sent.size
                columns = layer.expand.get(q, np.arange(needed.size))
                # every needed neuron is carried by a sent neuron of its own class
                assert (classes[sent[columns]] == classes[needed]).all()


def test_distinct_columns_fold_nothing() -> None:
    rng = np.random.default_rng(0)
    layers = tuple(sp.csr_matrix(sp.random(40, 40, density=0.2, random_state=rng))
                   for _ in range(3))
    net = Network(40, layers, -0.1)
    plan, _ = build_plan(net, np.tile(np.arange(40) % 4, (4, 1)), 4)
    assert (plan.volume == plan.copies).all()
