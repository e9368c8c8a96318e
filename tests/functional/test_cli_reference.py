"""``fsd reference`` against an independent implementation and against hand-worked numbers.

The oracle below is deliberately naive: dense numpy arrays, the Graph Challenge rules
written out one by one, and files written with plain string formatting. It shares no code
with fsd_inference, so agreement means both read the rules the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CAP = 32.0


def dense_graph_challenge(weights: list[np.ndarray], x: np.ndarray, bias: float) -> list[int]:
    """Y <- min(max(Y W + b on the nonzeros of Y W, 0), 32) per layer; the categories are
    the 1-based rows whose final activations sum to something nonzero."""
    y = x.astype(np.float64)
    for w in weights:
        z = y @ w
        z = np.where(z != 0, z + bias, 0.0)
        y = np.minimum(np.maximum(z, 0.0), CAP)
    return [i + 1 for i in range(y.shape[0]) if y[i].sum() != 0]


def tsv_lines(matrix: np.ndarray) -> str:
    rows, cols = np.nonzero(matrix)
    return "".join(f"{r + 1}\t{c + 1}\t{float(matrix[r, c])!r}\n"
                   for r, c in zip(rows.tolist(), cols.tolist(), strict=True))


def random_case(seed: int) -> tuple[list[np.ndarray], np.ndarray, float]:
    """A small random network and input batch. Weights are multiples of 1/8 (not the
    generator's 1/16), inputs small powers of two and most biases dyadic, so float64
    arithmetic is exact and summation order cannot matter; one bias (-0.3) is not."""
    rng = np.random.default_rng(seed)
    neurons = int(rng.integers(6, 25))
    depth = int(rng.integers(1, 6))
    weights = []
    for _ in range(depth):
        mask = rng.random((neurons, neurons)) < 0.3
        values = rng.choice([k / 8 for k in range(-6, 14) if k], size=(neurons, neurons))
        w = np.where(mask, values, 0.0)
        w[rng.integers(neurons), rng.integers(neurons)] = 0.75  # never an empty layer
        weights.append(w)
    rows = 24
    density = np.linspace(0.05, 0.6, rows)[:, None]
    pixels = rng.choice([0.25, 0.5, 1.0, 2.0, 3.0], size=(rows, neurons))
    x = np.where(rng.random((rows, neurons)) < density, pixels, 0.0)
    x[rows - 1, 0] = 1.0  # the file then has all 24 rows
    bias = float(rng.choice([-0.5, -0.375, -0.25, 0.125, -0.3]))
    return weights, x, bias


SEEDS = [14, 23, 42, 30, 35, 48, 17, 11]  # chosen (on the oracle alone) to split the rows


@pytest.fixture(scope="module")
def oracle_runs(tmp_path_factory: pytest.TempPathFactory,
                run_fsd_batch: Callable[..., list[Any]]) -> dict[int, tuple[Any, list[int], Path]]:
    jobs, expected = [], []
    for seed in SEEDS:
        weights, x, bias = random_case(seed)
        root = tmp_path_factory.mktemp(f"oracle{seed}")
        (root / "net").mkdir()
        for k, w in enumerate(weights, start=1):
            (root / "net" / f"n{w.shape[0]}-l{k}.tsv").write_text(tsv_lines(w), encoding="utf-8")
        (root / "x.tsv").write_text(tsv_lines(x), encoding="utf-8")
        jobs.append((("reference", "--model", "net", "--input", "x.tsv", "--out", "c.txt",
                      "--bias", repr(bias), "--quiet"), root))
        expected.append(dense_graph_challenge(weights, x, bias))
    runs = run_fsd_batch(jobs)
    return {seed: (run, want, root)
            for seed, run, want, (_, root) in zip(SEEDS, runs, expected, jobs, strict=True)}


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_agrees_with_an_independent_dense_implementation(
    oracle_runs: dict[int, tuple[Any, list[int], Path]], seed: int
) -> None:
    run, expected, root = oracle_runs[seed]
    assert run.returncode == 0, run.stderr
    assert 0 < len(expected) < 24, "the case should separate rows, not keep or drop them all"
    written = [int(line) for line in (root / "c.txt").read_text(encoding="utf-8").split()]
    assert written == expected
    assert f"categories: {len(expected)} of 24 inputs" in run.stdout


def test_the_cases_cover_both_signs_of_bias_and_several_depths() -> None:
    cases = [random_case(seed) for seed in SEEDS]
    assert {np.sign(bias) for _, _, bias in cases} == {-1.0, 1.0}
    assert len({len(weights) for weights, _, _ in cases}) >= 3
    assert -0.3 in {bias for _, _, bias in cases}


# ----------------------------------------------------------------------------- by hand


def triples_text(triples: Any) -> str:
    return "".join(f"{r}\t{c}\t{v!r}\n" for r, c, v in triples)


HAND_COMMON = ("reference", "--model", "net", "--input", "x.tsv", "--quiet")
HAND_JOBS = {
    **{f"{dtype}{bias}": ("--bias", bias, "--dtype", dtype, "--out", f"{dtype}{bias}.txt")
       for dtype in ("float64", "float32") for bias in ("0.5", "-0.5")},
    "match": ("--bias", "0.5", "--out", "a.txt", "--expect", "right.txt"),
    "mismatch": ("--bias", "0.5", "--out", "b.txt", "--expect", "wrong.txt"),
}


@pytest.fixture(scope="module")
def hand_runs(tmp_path_factory: pytest.TempPathFactory,
              run_fsd_batch: Callable[..., list[Any]], hand_case: Any
              ) -> tuple[Path, dict[str, Any]]:
    """The worked example of tests/unit/test_model_reference.py, run every way at once."""
    root = tmp_path_factory.mktemp("hand")
    (root / "net").mkdir()
    for k, triples in enumerate(hand_case.layers, start=1):
        (root / "net" / f"n4-l{k}.tsv").write_text(triples_text(triples), encoding="utf-8")
    (root / "x.tsv").write_text(triples_text(hand_case.inputs), encoding="utf-8")
    (root / "right.txt").write_text("1\n2\n4\n", encoding="utf-8")
    (root / "wrong.txt").write_text("1\n2\n3\n", encoding="utf-8")
    runs = run_fsd_batch([((*HAND_COMMON, *args), root) for args in HAND_JOBS.values()])
    return root, dict(zip(HAND_JOBS, runs, strict=True))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("bias", "categories"), [("0.5", "1\n2\n4\n"), ("-0.5", "2\n")])
def test_reference_on_the_hand_worked_network(hand_runs: tuple[Path, dict[str, Any]],
                                              dtype: str, bias: str, categories: str) -> None:
    root, runs = hand_runs
    run = runs[f"{dtype}{bias}"]
    assert run.returncode == 0, run.stderr
    assert (root / f"{dtype}{bias}.txt").read_text(encoding="utf-8") == categories
    assert dtype in run.stdout


def test_expect_exit_codes(hand_runs: tuple[Path, dict[str, Any]]) -> None:
    root, runs = hand_runs
    match = runs["match"]
    assert match.returncode == 0, match.stderr
    assert "match" in match.stdout and "MISMATCH" not in match.stdout

    mismatch = runs["mismatch"]
    assert mismatch.returncode == 3, mismatch.stderr
    assert "MISMATCH" in mismatch.stdout
    assert "1 missing, 1 extra" in mismatch.stdout  # 3 expected but absent, 4 present
    # The categories are still written: the comparison is a check, not a filter.
    assert (root / "b.txt").read_text(encoding="utf-8") == "1\n2\n4\n"


def test_the_cap_can_decide_a_category(tmp_path: Path, run_fsd: Callable[..., Any],
                                       write_network: Callable[..., Path],
                                       write_triples: Callable[..., Path]) -> None:
    """x1 = 10. Layer 1: z1 = 10 * 4 = 40, capped to 32; z2 = 10 * 3 = 30. Layer 2:
    z3 = 32 * (-1) + 30 * 1.125 = 1.75 > 0, so row 1 is a category; uncapped it would be
    -40 + 33.75 < 0 and there would be none. Bias 0."""
    layers = [[(1, 1, 4.0), (1, 2, 3.0)], [(1, 3, -1.0), (2, 3, 1.125)]]
    write_network(layers, 3)
    write_triples("x.tsv", [(1, 1, 10.0)])
    x = np.array([[10.0, 0.0, 0.0]])
    dense = [np.zeros((3, 3)) for _ in layers]
    for w, triples in zip(dense, layers, strict=True):
        for r, c, v in triples:
            w[r - 1, c - 1] = v
    assert dense_graph_challenge(dense, x, 0.0) == [1]
    run = run_fsd("reference", "--model", "net", "--input", "x.tsv", "--out", "c.txt",
                  "--bias", "0", "--quiet")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "1\n"
