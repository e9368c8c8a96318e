"""Partitioners, the plan's traffic count, the partition cache and ``fsd plan``."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.network import Network
from fsd_inference.partition import PARTITIONERS, Partitioner, get_partitioner
from fsd_inference.partition.cache import cache_path, owners_for, ownership
from fsd_inference.partition.hypergraph import EPSILON, max_part_weight
from fsd_inference.partition.plan import build_plan

NAMES = sorted(PARTITIONERS)


@functools.cache
def radixnet(neurons: int = 256, layers: int = 6, seed: int = 1) -> Network:
    return generate(GeneratorParams(neurons, layers, seed, bias=-0.3))


@functools.cache
def irregular(neurons: int = 96, layers: int = 4, seed: int = 5) -> Network:
    """Uneven in-degrees (work) per neuron, some neurons with none."""
    rng = np.random.default_rng(seed)
    return Network(neurons, tuple(
        sp.csr_matrix(sp.random(neurons, neurons, density=0.06, random_state=rng))
        for _ in range(layers)), -0.1)


def work(network: Network, owners: np.ndarray, workers: int) -> np.ndarray:
    """(L, P): nonzeros of W_l in the columns each worker owns."""
    return np.array([np.bincount(owners[k], weights=np.diff(sp.csc_matrix(w).indptr),
                                 minlength=workers)
                     for k, w in enumerate(network.layers, start=1)])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("workers", [1, 3, 8])
def test_every_partitioner_returns_a_valid_balanced_ownership(name: str, workers: int) -> None:
    for network in (radixnet(), irregular()):
        owners = get_partitioner(name).partition(network, workers, seed=4)
        assert owners.shape == (network.depth + 1, network.neurons)
        assert owners.min() >= 0 and owners.max() < workers
        if name == "hypergraph":  # balanced by work, within the stated epsilon
            totals = [int(np.diff(sp.csc_matrix(w).indptr).sum()) for w in network.layers]
            bounds = [max_part_weight(t, workers, EPSILON) for t in totals]
            assert (work(network, owners, workers).max(axis=1) <= bounds).all()
            counts = np.bincount(owners[0], minlength=workers)  # inputs: one column each
            assert counts.max() <= max_part_weight(network.neurons, workers, EPSILON)
        else:  # balanced by neuron count
            counts = np.array([np.bincount(row, minlength=workers) for row in owners])
            assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()


@pytest.mark.parametrize("name", NAMES)
def test_partitioners_are_deterministic_per_seed(name: str) -> None:
    network = radixnet()
    first = get_partitioner(name).partition(network, 4, seed=7)
    again = get_partitioner(name).partition(network, 4, seed=7)
    assert np.array_equal(first, again)
    if name != "contiguous":  # the seed is not ignored
        assert not np.array_equal(first, get_partitioner(name).partition(network, 4, seed=8))


def test_hypergraph_is_the_same_in_another_process(tmp_path: Path) -> None:
    """Cached partitions are shared between processes, so the seed must fix them."""
    model = tmp_path / "net.fsdm"
    save_network(radixnet(), model)
    script = (
        "import sys, numpy as np\n"
        "from fsd_inference.model.binary import load_network\n"
        "from fsd_inference.partition import get_partitioner\n"
        "owners = get_partitioner('hypergraph').partition(load_network(sys.argv[1]), 4, 7)\n"
        "np.save(sys.argv[2], owners)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "o.npy")],
                   check=True, timeout=120)
    here = get_partitioner("hypergraph").partition(radixnet(), 4, seed=7)
    assert np.array_equal(np.load(tmp_path / "o.npy"), here)


@pytest.mark.parametrize("workers", [4, 8])
def test_hypergraph_moves_far_fewer_neurons_than_random(workers: int) -> None:
    network = radixnet()
    plans = {name: build_plan(network, get_partitioner(name).partition(network, workers, 0),
                              workers)[0]
             for name in ("hypergraph", "random", "contiguous")}
    hyper = plans["hypergraph"]
    for baseline in ("random", "contiguous"):
        assert hyper.total_neurons < 0.5 * plans[baseline].total_neurons
        assert hyper.copies.sum() < 0.5 * plans[baseline].copies.sum()
    assert (hyper.neurons_per_layer < plans["random"].neurons_per_layer).all()


def test_hypergraph_handles_one_worker_and_more_workers_than_work() -> None:
    network = radixnet()
    alone = get_partitioner("hypergraph").partition(network, 1)
    assert (alone == 0).all()
    assert build_plan(network, alone, 1)[0].total_neurons == 0
    # 8 neurons, only 3 with work in each layer, 5 and 16 workers
    dense = np.zeros((8, 8))
    dense[[0, 1, 2, 5], [1, 1, 4, 6]] = [1.0, 2.0, 3.0, 4.0]
    tiny = Network(8, (sp.csr_matrix(dense), sp.csr_matrix(dense.T)), 0.0)
    for workers in (5, 16):
        owners = get_partitioner("hypergraph").partition(tiny, workers, seed=1)
        assert owners.shape == (3, 8) and owners.max() < workers
        heaviest = [np.diff(sp.csc_matrix(w).indptr).max() for w in tiny.layers]
        assert (work(tiny, owners, workers).max(axis=1) == heaviest).all()  # one each
        build_plan(tiny, owners, workers)  # idle workers are fine for the plan


# ----------------------------------------------------------------------------- plan volume


def brute_force_traffic(network: Network, owners: np.ndarray, workers: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """|R_l(q, p)| and the distinct columns among them, from dense matrices and loops.

    Y_{l-1} columns are equal when their columns of W_{l-1} are equal (same sources, same
    weights), so a sender ships one of each; Y_0 (the inputs) has no such equalities.
    """
    copies = np.zeros((network.depth, workers, workers), dtype=np.int64)
    distinct = np.zeros_like(copies)
    for k in range(1, network.depth + 1):
        dense = network.layers[k - 1].toarray()
        before = network.layers[k - 2].toarray() if k > 1 else np.eye(network.neurons)
        for q in range(workers):
            for p in range(workers):
                if p == q:
                    continue
                needed = [j for j in range(network.neurons)
                          if owners[k - 1, j] == q and (dense[j, owners[k] == p] != 0).any()]
                copies[k - 1, q, p] = len(needed)
                columns = {tuple(before[:, j]) for j in needed}
                distinct[k - 1, q, p] = len(columns)
    return copies, distinct


@pytest.mark.parametrize("name", NAMES)
def test_plan_volume_equals_a_brute_force_count(name: str) -> None:
    workers = 3
    for network in (radixnet(64, 4, seed=2), irregular(40, 3)):
        owners = get_partitioner(name).partition(network, workers, seed=2)
        plan, _ = build_plan(network, owners, workers)
        copies, distinct = brute_force_traffic(network, owners, workers)
        assert np.array_equal(plan.copies, copies)
        assert np.array_equal(plan.volume, distinct)


# ----------------------------------------------------------------------------- cache


class Counting(Partitioner):
    name = "counting"
    calls = 0

    def _owners(self, network: Network, parts: int, seed: int) -> np.ndarray:
        type(self).calls += 1
        return np.random.default_rng(seed).integers(0, parts, network.neurons)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[Counting]:
    monkeypatch.setitem(PARTITIONERS, Counting.name, Counting)
    monkeypatch.setattr(Counting, "calls", 0)
    return Counting


def test_cache_hit_returns_the_same_array_without_partitioning(
        tmp_path: Path, counting: type[Counting]) -> None:
    network = radixnet()
    first = ownership(network, "counting", 4, seed=3, cache_dir=tmp_path)
    assert not first.cached and counting.calls == 1
    second = ownership(network, "counting", 4, seed=3, cache_dir=tmp_path)
    assert second.cached and counting.calls == 1
    assert np.array_equal(first.owners, second.owners)
    assert second.owners.dtype == np.int32 and second.path == first.path
    assert np.array_equal(owners_for(network, "counting", 4, 3, tmp_path), first.owners)
    assert counting.calls == 1
    # another seed, worker count or model is another entry
    ownership(network, "counting", 4, seed=4, cache_dir=tmp_path)
    ownership(network, "counting", 5, seed=3, cache_dir=tmp_path)
    ownership(radixnet(seed=2), "counting", 4, seed=3, cache_dir=tmp_path)
    assert counting.calls == 4
    files = sorted(p.name for p in first.path.parent.iterdir())
    assert len(files) == 4 and not [f for f in files if f.startswith(".")]  # no temporaries


def test_cache_uses_the_environment_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counting: type[Counting]) -> None:
    monkeypatch.setenv("FSD_CACHE_DIR", str(tmp_path))
    result = ownership(radixnet(), "counting", 2)
    assert result.path.is_relative_to(tmp_path) and result.path.is_file()


@pytest.mark.parametrize("damage", ["garbage", "wrong shape", "owner out of range"])
def test_a_damaged_cache_entry_is_recomputed(
        tmp_path: Path, counting: type[Counting], damage: str) -> None:
    network = radixnet()
    path = cache_path(network, "counting", 4, 0, tmp_path)
    path.parent.mkdir(parents=True)
    if damage == "garbage":
        path.write_bytes(b"not an array")
    elif damage == "wrong shape":
        np.save(path, np.zeros((2, 3), dtype=np.int32))
    else:
        np.save(path, np.full((network.depth + 1, network.neurons), 9, dtype=np.int32))
    result = ownership(network, "counting", 4, 0, tmp_path)
    assert not result.cached and counting.calls == 1
    assert ownership(network, "counting", 4, 0, tmp_path).cached


# ----------------------------------------------------------------------------- fsd plan


def test_fsd_plan_command(tmp_path: Path) -> None:
    model = tmp_path / "net.fsdm"
    save_network(radixnet(), model)
    env = {**os.environ, "FSD_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "fsd_inference.cli", "plan", "--model", str(model),
               "--workers", "4", "--partition", "hypergraph", "--seed", "1",
               "--json", str(tmp_path / "plan.json")]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "partitioned" in first.stdout and "neurons sent per layer" in first.stdout
    assert "messages per layer" in first.stdout and "work per worker" in first.stdout
    document = json.loads((tmp_path / "plan.json").read_text())
    owners = get_partitioner("hypergraph").partition(radixnet(), 4, seed=1)
    plan, _ = build_plan(radixnet(), owners, 4)
    assert document["neurons_sent"]["per_layer"] == plan.neurons_per_layer.tolist()
    assert document["neurons_sent"]["total"] == plan.total_neurons
    assert document["messages_per_layer"] == plan.messages_per_layer.tolist()
    assert sum(document["work"]["per_worker"]) == radixnet().edges
    assert not document["partition"]["cached"]
    again = subprocess.run(command[:-2], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "(cached," in again.stdout
    bad = subprocess.run([*command[:7], "0"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "argument --workers: must be between 1 and" in bad.stderr
