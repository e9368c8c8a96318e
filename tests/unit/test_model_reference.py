"""The reference inference on a network small enough to work through by hand.

The case (``hand_case`` in conftest.py), indices 1-based as in the files:

    inputs   x1 = [1, 0, 2, 0]   x2 = [0, 0, 0, 4]   x3 = [0, 1, 0, 0]   x4 = [0, 0, 0, 1/8]
    W1       (1,1)=1 (1,2)=2 (3,2)=-1 (2,3)=-3 (4,4)=8
    W2       (1,2)=1 (1,4)=-1/4 (2,3)=1 (4,1)=-1 (4,3)=1

Layer 1, Z = x @ W1 before the bias:
    x1: z1 = 1, z2 = 1*2 + 2*(-1) = 0 (cancels: not a stored nonzero, gets no bias)
    x2: z4 = 4*8 = 32        x3: z3 = -3        x4: z4 = 1/8 * 8 = 1

Bias +1/2 (a positive bias is what makes "only on nonzeros" observable):
    layer 1: x1 -> {1: 1.5}   x2 -> {4: min(32.5, 32) = 32}   x3 -> {} (ReLU)   x4 -> {4: 1.5}
    layer 2: y1 -> z2 = 1.5 -> 2,  z4 = -0.375 -> 0.125   (z3 = 0: neuron 2 of y1 is 0)
             y2 -> z1 = -32 -> 0,  z3 = 32 -> min(32.5, 32) = 32
             y4 -> z1 = -1.5 -> 0, z3 = 1.5 -> 2
    categories 1, 2, 4.
    Had the bias gone to every neuron, y1 would carry neuron 2 = 0.5 into W2 (2,3) and row 3
    would survive; without the cap, row 2 would end at 32.5.

Bias -1/2:
    layer 1: x1 -> {1: 0.5}   x2 -> {4: 31.5}   x3 -> {}   x4 -> {4: 0.5}
    layer 2: y1 -> z2 = 0.5 - 0.5 = 0 (dropped), z4 = -0.125 - 0.5 < 0
             y2 -> z3 = 31.5 - 0.5 = 31      y4 -> z3 = 0.5 - 0.5 = 0 (dropped)
    categories 2 only.

Every number above is dyadic, so float32 and float64 give the same exact values.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.exceptions import ConfigError
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer

DTYPES = ["float64", "float32"]


def matrix(triples: tuple[tuple[int, int, float], ...], shape: tuple[int, int]) -> sp.csr_matrix:
    rows = [r - 1 for r, _, _ in triples]
    cols = [c - 1 for _, c, _ in triples]
    values = [v for _, _, v in triples]
    return sp.csr_matrix((values, (rows, cols)), shape=shape)


def entries(y: sp.csr_matrix) -> dict[tuple[int, int], float]:
    """Stored entries as {(row, col): value}, 1-based."""
    coo = y.tocoo()
    return {(int(r) + 1, int(c) + 1): float(v) for r, c, v in zip(coo.row, coo.col, coo.data,
                                                                   strict=True)}


def hand_network(case, bias: float, depth: int = 2) -> Network:
    n = case.neurons
    return Network(n, tuple(matrix(t, (n, n)) for t in case.layers[:depth]), bias)


def hand_inputs(case) -> sp.csr_matrix:
    return matrix(case.inputs, (4, case.neurons))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("bias", "depth", "expected", "categories"),
    [
        (0.5, 1, {(1, 1): 1.5, (2, 4): 32.0, (4, 4): 1.5}, [1, 2, 4]),
        (0.5, 2, {(1, 2): 2.0, (1, 4): 0.125, (2, 3): 32.0, (4, 3): 2.0}, [1, 2, 4]),
        (-0.5, 1, {(1, 1): 0.5, (2, 4): 31.5, (4, 4): 0.5}, [1, 2, 4]),
        (-0.5, 2, {(2, 3): 31.0}, [2]),
    ],
    ids=["plus-half-1-layer", "plus-half-2-layers", "minus-half-1-layer", "minus-half-2-layers"],
)
def test_hand_computed_network(hand_case, dtype: str, bias: float, depth: int,
                               expected: dict[tuple[int, int], float],
                               categories: list[int]) -> None:
    result = infer(hand_network(hand_case, bias, depth), hand_inputs(hand_case), dtype)
    assert result.activations.dtype == np.dtype(dtype)
    assert entries(result.activations) == expected
    assert np.all(result.activations.data != 0), "zeros must be eliminated, not stored"
    np.testing.assert_array_equal(result.categories, categories)
    assert result.categories.dtype.kind == "i"
    assert result.inputs == 4
    assert result.edges == sum(len(t) for t in hand_case.layers[:depth])


def test_trailing_empty_rows_are_not_categories(hand_case) -> None:
    inputs = matrix(hand_case.inputs, (6, 4))  # rows 5 and 6 have no pixels
    result = infer(hand_network(hand_case, 0.5), inputs)
    np.testing.assert_array_equal(result.categories, [1, 2, 4])
    assert result.activations.shape == (6, 4)


def test_inputs_are_not_modified_and_progress_is_reported(hand_case) -> None:
    inputs = hand_inputs(hand_case)
    before = inputs.copy()
    calls: list[tuple[int, int]] = []
    infer(hand_network(hand_case, 0.5), inputs, progress=lambda d, t: calls.append((d, t)))
    assert entries(inputs) == entries(before)
    assert calls == [(1, 2), (2, 2)]


def test_cap_applies_in_every_layer() -> None:
    """A chain 1 -> 2 -> 3 with weight 4: 10 -> 40 capped to 32 -> 128 capped to 32."""
    w = sp.csr_matrix(([4.0, 4.0], ([0, 1], [1, 2])), shape=(3, 3))
    x = sp.csr_matrix(([10.0], ([0], [0])), shape=(1, 3))
    first = infer(Network(3, (w,), 0.0), x)
    assert entries(first.activations) == {(1, 2): 32.0}
    both = infer(Network(3, (w, w), 0.0), x)
    assert entries(both.activations) == {(1, 3): 32.0}


def test_unknown_dtype_is_a_config_error(hand_case) -> None:
    with pytest.raises(ConfigError, match="float16"):
        infer(hand_network(hand_case, 0.5), hand_inputs(hand_case), "float16")
