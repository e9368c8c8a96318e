"""The predictor's block builder against the worker's own slicing, on real activations."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.channels.codec import encode_body
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import layer_step
from fsd_inference.model.tsv import read_input
from fsd_inference.partition.plan import build_plan
from fsd_inference.predict import blocks
from fsd_inference.predict.blocks import layer_blocks, layer_groups, same_block
from fsd_inference.predict.counts import count_run
from fsd_inference.worker import outgoing

ROWS = 300
DEPTH = 3


@pytest.fixture(scope="module")
def activations() -> tuple[Network, list[sp.csr_matrix]]:
    network = generate(GeneratorParams(1024, DEPTH, seed=5))
    y = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:ROWS])
    y.sort_indices()
    layers = [y]
    for w in network.layers:
        y = layer_step(y, w, network.bias)
        layers.append(y)
    return network, layers


@pytest.mark.parametrize(("workers", "chunk"), [(5, 1 << 22), (300, 1 << 22), (7, 1000)])
def test_blocks_equal_the_workers_slicing(activations: tuple[Network, list[sp.csr_matrix]],
                                          workers: int, chunk: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    network, layers = activations
    monkeypatch.setattr(blocks, "CHUNK_ENTRIES", chunk)  # small: many runs per layer
    rng = np.random.default_rng(workers)
    owners = rng.integers(0, workers, size=(DEPTH + 1, 1024)).astype(np.int32)
    _, shards = build_plan(network, owners, workers)
    seen = shared = 0
    for k in range(1, DEPTH + 1):
        columns = sp.csc_matrix(layers[k - 1])
        columns.sort_indices()
        expected = []
        for shard in shards:  # the worker's way: its own columns, then outgoing
            mine = sp.csr_matrix(layers[k - 1][:, np.flatnonzero(owners[k - 1] == shard.worker)])
            expected += [(shard.worker, targets, block)
                         for targets, block in outgoing(shard.layers[k - 1], mine)]
        groups = layer_groups(k, owners[k - 1], shards)
        got = list(layer_blocks(columns, groups))
        assert [(g.source, g.targets) for g in groups] == [(q, t) for q, t, _ in expected]
        for block, (_, _, real) in zip(got, expected, strict=True):
            assert same_block(block, real)
            assert encode_body(block) == encode_body(real)
        seen += len(got)
        shared += sum(len(g.targets) > 1 for g in groups)
    assert seen > 0
    if workers > 100:
        assert shared > 0  # few neurons per worker: several targets share one block


def test_a_builder_that_disagrees_with_the_worker_is_refused(
        activations: tuple[Network, list[sp.csr_matrix]], monkeypatch: pytest.MonkeyPatch
) -> None:
    network, layers = activations
    workers = 4
    owners = np.random.default_rng(0).integers(0, workers, size=(DEPTH + 1, 1024)).astype(
        np.int32)
    plan, shards = build_plan(network, owners, workers)
    real = blocks.layer_blocks

    def off_by_one_row(columns: sp.csc_matrix, groups: list[blocks.Group]
                       ) -> Iterator[blocks.Block]:
        for block in real(columns, groups):
            yield blocks.Block(block.rows + 1, block.values)

    monkeypatch.setattr("fsd_inference.predict.counts.layer_blocks", off_by_one_row)
    with pytest.raises(blocks.BlockMismatch, match="layer 1, worker 0"):
        count_run(network, layers[0], owners, plan, shards, "float64",
                  "fsd-x", 1 << 20)
