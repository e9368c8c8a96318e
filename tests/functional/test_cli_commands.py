"""``fsd generate``, ``fsd inputs`` and ``fsd convert`` through the real command, and what
every writing command leaves behind when the disk fills up half-way."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.model.binary import load_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.tsv import read_network_dir


def parse(path: Path) -> list[tuple[int, int, float]]:
    """A TSV file, read line by line with plain Python."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        out = []
        for line in handle.read().splitlines():
            row, col, value = line.split("\t")
            out.append((int(row), int(col), float(value)))
    return out


def to_dense(triples: list[tuple[int, int, float]], neurons: int) -> np.ndarray:
    dense = np.zeros((neurons, neurons))
    for r, c, v in triples:
        assert dense[r - 1, c - 1] == 0, f"entry ({r}, {c}) appears twice"
        dense[r - 1, c - 1] = v
    return dense


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- generate


def test_generate_writes_the_layout_and_the_bundle(tmp_path: Path,
                                                   run_fsd: Callable[..., Any]) -> None:
    run = run_fsd("generate", "--neurons", "128", "--layers", "3", "--seed", "9",
                  "--bias", "-0.25", "--out", "gen", "--binary", "gen.fsdm")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == [
        "n128-l1.tsv", "n128-l2.tsv", "n128-l3.tsv"
    ]
    expected = generate(GeneratorParams(128, 3, seed=9, bias=-0.25))
    for k in (1, 2, 3):
        lines = parse(tmp_path / "gen" / f"n128-l{k}.tsv")
        assert len(lines) == 32 * 128
        assert {v for _, _, v in lines} == {0.0625}
        dense = to_dense(lines, 128)
        assert np.all((dense != 0).sum(axis=0) == 32)
        assert np.all((dense != 0).sum(axis=1) == 32)
        np.testing.assert_array_equal(dense, expected.layers[k - 1].toarray())

    folder = read_network_dir(tmp_path / "gen", bias=-0.25)
    bundle = load_network(tmp_path / "gen.fsdm")
    assert bundle.bias == -0.25
    assert folder.fingerprint() == bundle.fingerprint() == expected.fingerprint()
    assert "wrote 3 layers of 128 neurons" in run.stdout


def test_generate_defaults_the_bias_by_neurons(tmp_path: Path,
                                               run_fsd: Callable[..., Any]) -> None:
    run = run_fsd("generate", "--neurons", "1024", "--layers", "1", "--out", "gen",
                  "--binary", "gen.fsdm")
    assert run.returncode == 0, run.stderr
    assert load_network(tmp_path / "gen.fsdm").bias == -0.3
    assert read_network_dir(tmp_path / "gen").bias == -0.3
    assert len(parse(tmp_path / "gen" / "n1024-l1.tsv")) == 32 * 1024


# ----------------------------------------------------------------------------- inputs


def upsample_by_hand(triples: list[tuple[int, int, float]], side: int, target_side: int
                     ) -> list[tuple[int, int, float]]:
    """Pixel (r, c) of a side x side image becomes the f x f block at (f r .. f r + f - 1,
    f c .. f c + f - 1), f = target_side / side; columns are row-major and 1-based."""
    f = target_side // side
    out = []
    for row, col, value in triples:
        r, c = divmod(col - 1, side)
        for dr in range(f):
            for dc in range(f):
                out.append((row, (f * r + dr) * target_side + (f * c + dc) + 1, value))
    return sorted(out)


@pytest.mark.parametrize(("neurons", "out_name"), [(4096, "up.tsv"), (16384, "up.tsv.gz")])
def test_inputs_upsamples_by_pixel_blocks(tmp_path: Path, run_fsd: Callable[..., Any],
                                          write_triples: Callable[..., Path], neurons: int,
                                          out_name: str) -> None:
    rng = np.random.default_rng(neurons)
    cells: dict[tuple[int, int], float] = {}
    for row in (1, 2, 3, 5):  # row 4 has no pixels
        for col in rng.choice(1024, size=40, replace=False) + 1:
            cells[(row, int(col))] = int(col) / 8  # the value tells the pixel apart
    cells[(5, 1)] = 0.5
    cells[(5, 1024)] = 2.0  # both corners
    source = [(r, c, v) for (r, c), v in sorted(cells.items())]
    write_triples("mnist.tsv", source)
    run = run_fsd("inputs", "--neurons", neurons, "--from", "mnist.tsv", "--out", out_name)
    assert run.returncode == 0, run.stderr
    got = parse(tmp_path / out_name)
    assert sorted(got) == upsample_by_hand(source, 32, int(neurons ** 0.5))
    assert got == sorted(got)  # ordered by row, then column


def test_inputs_pixel_mapping_on_named_pixels(tmp_path: Path, run_fsd: Callable[..., Any],
                                              write_triples: Callable[..., Path]) -> None:
    """Explicit corners: pixel (0, 0) -> 64x64 pixels (0,0), (0,1), (1,0), (1,1) = columns
    1, 2, 65, 66; pixel (31, 31) = column 1024 -> (62..63, 62..63) = 4031, 4032, 4095, 4096;
    pixel (1, 2) = column 35 -> (2..3, 4..5) = 133, 134, 197, 198."""
    write_triples("m.tsv", [(1, 1, 1.0), (1, 35, 0.5), (2, 1024, 3.0)])
    run = run_fsd("inputs", "--neurons", "4096", "--from", "m.tsv", "--out", "up.tsv")
    assert run.returncode == 0, run.stderr
    assert parse(tmp_path / "up.tsv") == [
        (1, 1, 1.0), (1, 2, 1.0), (1, 65, 1.0), (1, 66, 1.0),
        (1, 133, 0.5), (1, 134, 0.5), (1, 197, 0.5), (1, 198, 0.5),
        (2, 4031, 3.0), (2, 4032, 3.0), (2, 4095, 3.0), (2, 4096, 3.0),
    ]


# ----------------------------------------------------------------------------- convert


def test_convert_round_trip(tmp_path: Path, run_fsd: Callable[..., Any],
                            write_network: Callable[..., Path],
                            write_triples: Callable[..., Path]) -> None:
    rng = np.random.default_rng(5)
    layers = []
    for _ in range(3):
        dense = np.where(rng.random((9, 9)) < 0.4, rng.normal(size=(9, 9)), 0.0)
        layers.append([(r + 1, c + 1, float(dense[r, c])) for r, c in zip(*np.nonzero(dense),
                                                                            strict=True)])
    write_network(layers, 9)
    run = run_fsd("convert", "--model", "net", "--bias", "-0.125", "--out", "net.fsdm")
    assert run.returncode == 0, run.stderr
    bundle = load_network(tmp_path / "net.fsdm")
    assert (bundle.neurons, bundle.depth, bundle.bias) == (9, 3, -0.125)
    for got, triples in zip(bundle.layers, layers, strict=True):
        np.testing.assert_array_equal(sp.csr_matrix(got).toarray(), to_dense(triples, 9))

    again = run_fsd("convert", "--model", "net.fsdm", "--out", "copy.fsdm")
    assert again.returncode == 0, again.stderr
    assert load_network(tmp_path / "copy.fsdm").fingerprint() == bundle.fingerprint()

    # Both forms of the model give the same categories.
    write_triples("x.tsv", [(1, 1, 1.0), (1, 4, 2.0), (2, 9, 1.5), (3, 2, 0.5), (3, 3, 1.0)])
    common = ("reference", "--input", "x.tsv", "--bias", "-0.125", "--quiet")
    a = run_fsd(*common, "--model", "net", "--out", "a.txt")
    b = run_fsd(*common, "--model", "copy.fsdm", "--out", "b.txt")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()


# ----------------------------------------------------------------------------- full disk


FULL_DISK_LIMIT = 2048  # bytes per file: every output below is larger
FULL_DISK = {
    "generate": (("generate", "--neurons", "64", "--layers", "2", "--bias", "-0.3",
                  "--out", "gen"), "gen"),
    "inputs": (("inputs", "--neurons", "4096", "--from", "x.tsv", "--out", "up.tsv"), "up.tsv"),
    "convert": (("convert", "--model", "net", "--bias", "0.5", "--out", "net.fsdm"),
                "net.fsdm"),
    "reference": (("reference", "--model", "net", "--input", "x.tsv", "--bias", "0.5",
                   "--out", "c.txt", "--quiet"), "c.txt"),
}


@pytest.fixture(scope="module")
def full_disk_runs(tmp_path_factory: pytest.TempPathFactory,
                   run_fsd_batch: Callable[..., list[Any]]) -> dict[str, tuple[Any, dict, dict]]:
    """Each command in its own folder (a 64-neuron network, 1,000 input rows and, where the
    target is a file, a previous version of it), run with writes capped."""
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((64, 64)) < 0.5, rng.normal(size=(64, 64)), 0.0)
    layer = "".join(f"{r + 1}\t{c + 1}\t{float(dense[r, c])!r}\n"
                    for r, c in zip(*np.nonzero(dense), strict=True))
    inputs = "".join(f"{row}\t{col}\t1.0\n" for row in range(1, 1001) for col in (1, 2, 3))
    jobs, befores = [], []
    for name, (command, target) in FULL_DISK.items():
        root = tmp_path_factory.mktemp(f"full-{name}")
        (root / "net").mkdir()
        (root / "net" / "n64-l1.tsv").write_text(layer, encoding="utf-8")
        (root / "x.tsv").write_text(inputs, encoding="utf-8")
        if target.endswith((".fsdm", ".txt")):
            (root / target).write_text("previous\n", encoding="utf-8")
        befores.append(files_under(root))
        jobs.append((command, root))
    runs = run_fsd_batch(jobs, file_size_limit=FULL_DISK_LIMIT)
    return {name: (run, before, files_under(root))
            for name, run, before, (_, root) in zip(FULL_DISK, runs, befores, jobs, strict=True)}


@pytest.mark.parametrize("name", list(FULL_DISK))
def test_a_write_that_fails_half_way_leaves_no_partial_file(
    full_disk_runs: dict[str, tuple[Any, dict, dict]], name: str
) -> None:
    """With writes capped (as if the disk filled up), the command fails and the file it
    was writing is neither created nor replaced by a partial one."""
    run, before, after = full_disk_runs[name]
    assert run.returncode != 0
    assert "File too large" in run.stderr  # it failed writing, not earlier
    assert after == before, sorted(set(after) ^ set(before))
