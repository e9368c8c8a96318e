"""The shard cache: a hit gives the very shards and plan a fresh cut gives; anything
damaged, or cut for other owners, slots or dtype, is cut again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fsd_inference.model.binary import read_bundle, save_network
from fsd_inference.model.generate import GeneratedNetwork, GeneratorParams
from fsd_inference.model.load import open_model
from fsd_inference.partition.plan import write_shards
from fsd_inference.partition.shard_cache import (
    PLAN_FILE,
    cached_shards,
    entry_path,
    shard_name,
)

NEURONS, DEPTH, SLOTS = 256, 4, 3


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "net.fsdm"
    save_network(GeneratedNetwork(GeneratorParams(NEURONS, DEPTH, seed=2, bias=-0.3)), path)
    return path


def owners_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SLOTS, size=(DEPTH + 1, NEURONS))


def cut(model: Path, owners: np.ndarray, out: Path, root: Path | None,
        dtype: str = "float64") -> bool:
    with open_model(model, dtype=dtype) as network:
        plan, cached = cached_shards(network, owners, SLOTS, dtype,
                                     lambda p: out / f"s{p}.fsdm", root)
        fresh = write_shards(network, owners, SLOTS, lambda p: out / f"fresh{p}.fsdm")
    for name in ("volume", "copies", "work"):  # the plan as a fresh cut computes it
        np.testing.assert_array_equal(getattr(plan, name), getattr(fresh, name))
    assert plan.owners is owners
    for p in range(SLOTS):  # and the same members (the zip's timestamps may differ)
        (meta, arrays), (fresh_meta, fresh_arrays) = (
            read_bundle(out / f"{name}{p}.fsdm") for name in ("s", "fresh"))
        assert meta == fresh_meta and arrays.keys() == fresh_arrays.keys()
        for name, array in arrays.items():
            assert array.dtype == fresh_arrays[name].dtype
            assert array.tobytes() == fresh_arrays[name].tobytes(), name
    return cached


def test_a_second_cut_is_linked_from_the_cache(model: Path, tmp_path: Path) -> None:
    root, owners = tmp_path / "cache", owners_of(1)
    assert not cut(model, owners, tmp_path / "a", root)
    assert cut(model, owners, tmp_path / "b", root)
    assert not cut(model, owners, tmp_path / "c", None)  # no cache directory: no cache


def test_other_owners_or_dtype_are_other_entries(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    assert not cut(model, owners_of(1), tmp_path / "a", root)
    assert not cut(model, owners_of(2), tmp_path / "b", root)
    assert not cut(model, owners_of(1), tmp_path / "c", root, dtype="float32")
    assert cut(model, owners_of(2), tmp_path / "d", root)
    assert len(list((root / "shards").iterdir())) == 3


@pytest.mark.parametrize("damage", ["flip a shard byte", "drop a shard", "truncate the plan"])
def test_a_damaged_entry_is_cut_again(model: Path, tmp_path: Path, damage: str) -> None:
    root, owners = tmp_path / "cache", owners_of(1)
    cut(model, owners, tmp_path / "a", root)
    with open_model(model) as network:
        entry = entry_path(network, owners, SLOTS, "float64", root)
    shard = entry / shard_name(1)
    if damage == "flip a shard byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.unlink()  # the run's copy is a hard link: write a new file, not through it
        shard.write_bytes(bytes(data))
    elif damage == "drop a shard":
        shard.unlink()
    else:
        (entry / PLAN_FILE).write_bytes((entry / PLAN_FILE).read_bytes()[:100])
    assert not cut(model, owners, tmp_path / "b", root)  # checked against a fresh cut
    assert cut(model, owners, tmp_path / "c", root)  # and whole again
