"""The commands that scale: ``fsd generate --binary`` with no TSV folder, ``fsd inputs
--rows``, and ``fsd reference`` / ``fsd plan`` on a bundle read layer by layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fsd_inference.model.binary import BundleReader, load_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_categories, read_input


def test_generate_binary_alone_writes_no_folder(tmp_path: Path,
                                                run_fsd: Callable[..., Any]) -> None:
    run = run_fsd("generate", "--neurons", "256", "--layers", "3", "--seed", "2",
                  "--bias", "-0.3", "--binary", "only.fsdm")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "only.fsdm"]
    expected = generate(GeneratorParams(256, 3, seed=2, bias=-0.3))
    back = load_network(tmp_path / "only.fsdm")
    assert back.fingerprint() == expected.fingerprint()
    with BundleReader(tmp_path / "only.fsdm") as reader:
        assert reader.meta["version"] == 2 and reader.meta["edges"] == [32 * 256] * 3
    assert "to only.fsdm" in run.stdout and "block 2" in run.stdout


def test_generate_needs_somewhere_to_write(tmp_path: Path,
                                           run_fsd: Callable[..., Any]) -> None:
    run = run_fsd("generate", "--neurons", "256", "--layers", "3", "--bias", "-0.3")
    assert run.returncode == 2
    assert run.stderr_lines == ["fsd generate: error: fsd generate needs --out FOLDER, "
                                "--binary FILE or both"]
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_inputs_rows_takes_the_first_rows(tmp_path: Path,
                                          run_fsd: Callable[..., Any]) -> None:
    run = run_fsd("inputs", "--neurons", "4096", "--rows", "7", "--out", "x.tsv")
    assert run.returncode == 0, run.stderr
    expected = upsample(read_input(sample_input_path(), neurons=1024)[:7], 4096)
    got = read_input(tmp_path / "x.tsv", neurons=4096)
    assert got.shape[0] <= 7  # trailing empty rows leave no line behind
    assert (got != expected[:got.shape[0]]).nnz == 0
    assert "wrote 7 inputs" in run.stdout


def test_reference_and_plan_read_the_bundle_they_were_given(
        tmp_path: Path, run_fsd: Callable[..., Any]) -> None:
    network = generate(GeneratorParams(1024, 6, seed=1))
    assert run_fsd("generate", "--neurons", "1024", "--layers", "6", "--seed", "1",
                   "--binary", "n.fsdm").returncode == 0
    run = run_fsd("reference", "--model", "n.fsdm", "--input", sample_input_path(),
                  "--out", "cats.txt", "--quiet")
    assert run.returncode == 0, run.stderr
    full = infer(network, read_input(sample_input_path(), neurons=1024)).categories
    assert 0 < full.size < 10_000
    np.testing.assert_array_equal(read_categories(tmp_path / "cats.txt"), full)
    plan = run_fsd("plan", "--model", "n.fsdm", "--workers", "4", "--partition", "random",
                   "--json", "plan.json")
    assert plan.returncode == 0, plan.stderr
    assert "plan: " in plan.stdout
