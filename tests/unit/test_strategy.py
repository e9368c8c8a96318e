"""Shapes: what each strategy compiles to, task numbering, rows, and the owners."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsd_inference.exceptions import ConfigError
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.network import Network
from fsd_inference.strategy import Shape, Stage, compile_shape, shape_owners
from fsd_inference.strategy.shape import batch_order, split_evenly


def test_each_strategy_compiles_to_its_shape() -> None:
    neuron = compile_shape("neuron", 8, 120, 10_000)
    assert (neuron.groups, neuron.stages, neuron.tasks) == (1, (Stage(1, 120, 8),), 8)
    data = compile_shape("data", 8, 120, 10_000)
    assert (data.groups, data.stages, data.width) == (8, (Stage(1, 120, 1),), 1)
    pipeline = compile_shape("pipeline", 3, 120, 10_000)
    assert pipeline.stages == (Stage(1, 40, 1), Stage(41, 80, 1), Stage(81, 120, 1))
    assert pipeline.microbatches == 12 and pipeline.tasks == 3
    groups_of_parts = compile_shape("hybrid", 12, 120, 10_000, groups=3)
    assert (groups_of_parts.groups, groups_of_parts.stages) == (3, (Stage(1, 120, 4),))
    staged_groups = compile_shape("hybrid", 12, 7, 10_000, groups=2, stages=3)
    assert staged_groups.stages == (Stage(1, 3, 2), Stage(4, 5, 2), Stage(6, 7, 2))
    assert staged_groups.tasks == 12


@pytest.mark.parametrize(("strategy", "options", "message"), [
    ("pipeline", {"stages": 3}, "one worker per stage"),
    ("neuron", {"stages": 2}, "--stages does not apply"),
    ("data", {"groups": 2}, "--groups does not apply"),
    ("hybrid", {"groups": 5}, "multiple of --groups"),
    ("hybrid", {}, "at least one of them above 1"),
    ("pipeline", {"microbatches": 10_001}, "micro-batches"),
    ("wavefront", {}, "unknown strategy"),
])
def test_impossible_shapes_name_the_option_to_change(strategy: str, options: dict[str, int],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_shape(strategy, 4, 120, 10_000, **options)


def test_more_groups_than_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="only 5 inputs"):
        compile_shape("data", 8, 10, 5)
    with pytest.raises(ConfigError, match="stages must be between 1 and the 3 layers"):
        compile_shape("pipeline", 4, 3, 100)


@given(total=st.integers(0, 10_000), pieces=st.integers(1, 64))
def test_even_splits_cover_everything_once(total: int, pieces: int) -> None:
    bounds = split_evenly(total, pieces)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == total and len(sizes) == pieces
    assert sizes.min() >= 0 and sizes.max() - sizes.min() <= 1


@given(groups=st.integers(1, 5), parts=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_tasks_number_every_group_stage_and_part_once(groups: int, parts: list[int]) -> None:
    stages, first = [], 1
    for p in parts:
        stages.append(Stage(first, first + 1, p))
        first += 2
    shape = Shape("hybrid", groups, tuple(stages))
    seen = {(t.group, t.stage, t.part) for t in map(shape.task, range(shape.tasks))}
    assert len(seen) == shape.tasks == groups * sum(parts)
    for task in map(shape.task, range(shape.tasks)):
        assert task.task == task.group * shape.width + task.slot
        assert shape.stage_offsets()[task.stage] + task.part == task.slot
    with pytest.raises(ConfigError):
        shape.task(shape.tasks)


def test_group_rows_partition_the_batch() -> None:
    shape = compile_shape("data", 3, 10, 10)
    assert [shape.group_rows(g, 10) for g in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert Shape.from_dict(shape.to_dict()) == shape


@given(st.integers(0, 5000))
def test_batch_order_is_a_permutation_by_the_golden_ratio(batch: int) -> None:
    order = batch_order(batch)
    assert np.array_equal(np.sort(order), np.arange(batch))
    # independently, in floating point: rows by the fractional part of i * phi (the two
    # agree where doubles still tell neighbouring keys apart, far beyond these batches)
    phi = (1 + 5 ** 0.5) / 2
    assert np.array_equal(order, np.argsort(np.modf(np.arange(batch) * phi)[0],
                                            kind="stable"))


def test_batch_order_groups_share_the_work_of_sorted_or_periodic_inputs() -> None:
    batch, groups = 10_000, 16
    heavy_first = np.arange(batch) < batch // 4  # a sorted batch: the costly rows first
    every_second = np.arange(batch) % 2 == 0  # a period, as in the MNIST sample
    shape = compile_shape("data", groups, 10, batch)
    for heavy in (heavy_first, every_second):
        shares = [heavy[shape.group_row_ids(g, batch)].sum() for g in range(groups)]
        assert max(shares) / np.mean(shares) < 1.05  # within a few rows of a fair share
    # what the order is for: contiguous ranges of a sorted batch give 4 of 16 groups all
    # the costly rows
    contiguous = [heavy_first[a:b].sum() for a, b in
                  (shape.group_rows(g, batch) for g in range(groups))]
    assert max(contiguous) / np.mean(contiguous) == pytest.approx(4.0, rel=0.01)
    rows = np.concatenate([shape.group_row_ids(g, batch) for g in range(groups)])
    assert np.array_equal(np.sort(rows), np.arange(batch))  # every row in one group


def _network() -> Network:
    return generate(GeneratorParams(64, 6, seed=1, bias=-0.3))


def test_owners_give_each_stage_its_own_slots() -> None:
    network = _network()
    shape = compile_shape("hybrid", 4, 6, 100, stages=2)  # 2 stages x 2 parts
    calls = []

    def halves(sub: NetworkSource, parts: int) -> np.ndarray:
        calls.append((sub.depth, parts))
        return np.tile(np.arange(sub.neurons) % parts, (sub.depth + 1, 1))

    owners = shape_owners(network, shape, halves)
    assert calls == [(3, 2), (3, 2)]
    assert owners.shape == (7, 64)
    assert set(np.unique(owners[:4])) == {0, 1}  # input and stage 0's layers 1..3
    assert set(np.unique(owners[4:])) == {2, 3}  # stage 1's layers 4..6


def test_a_stage_of_one_part_needs_no_partitioner() -> None:
    def never(sub: NetworkSource, parts: int) -> np.ndarray:
        raise AssertionError("no partitioner for a single part")

    owners = shape_owners(_network(), compile_shape("pipeline", 2, 6, 100), never)
    assert (owners[:4] == 0).all() and (owners[4:] == 1).all()
