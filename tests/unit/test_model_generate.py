"""The RadiX-Net style generator: regular degrees, determinism, bias defaults, and the
claim that relabelling changes the labels but not the function the network computes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.exceptions import ConfigError
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input


def degrees(w: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(out-degree per row, in-degree per column) of the stored pattern."""
    pattern = sp.csr_matrix(w != 0, dtype=np.int64)
    return np.diff(pattern.indptr), np.bincount(pattern.indices, minlength=w.shape[1])


def pattern(w: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix(w != 0, dtype=np.int64)


def same_matrix(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


def sorted_rows(y: sp.csr_matrix) -> list[list[float]]:
    """Each row's values, sorted: what survives a renaming of the columns."""
    y = sp.csr_matrix(y)
    return [sorted(y.data[y.indptr[i]:y.indptr[i + 1]].tolist()) for i in range(y.shape[0])]


def dyadic_inputs(rows: int, neurons: int, seed: int) -> sp.csr_matrix:
    """Random inputs whose values are powers of two: with 1/16 weights and a dyadic bias
    every sum is exact, so any summation order gives the same bits. Row densities rise
    from 2% to 40%, so some rows die out and some survive."""
    rng = np.random.default_rng(seed)
    density = np.linspace(0.02, 0.4, rows)[:, None]
    values = rng.choice([0.25, 0.5, 1.0, 2.0], size=(rows, neurons))
    return sp.csr_matrix(np.where(rng.random((rows, neurons)) < density, values, 0.0))


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize(
    ("neurons", "block", "layers"),
    [(64, 2, 5), (96, 2, 3), (1024, 2, 4), (1024, 1, 3), (512, 4, 4), (256, 8, 5), (544, 16, 7)],
)
def test_every_neuron_has_32_in_and_32_out_edges_of_weight_one_sixteenth(
    neurons: int, block: int, layers: int
) -> None:
    network = generate(GeneratorParams(neurons, layers, seed=11, block=block, bias=-0.3))
    assert network.depth == layers
    assert network.edges == 32 * neurons * layers
    for w in network.layers:
        assert w.shape == (neurons, neurons)
        out_degree, in_degree = degrees(w)
        assert np.all(out_degree == 32)
        assert np.all(in_degree == 32)
        assert w.dtype == np.float64
        assert np.all(w.data == 0.0625)  # also rules out summed duplicate edges (1/8, ...)


def test_same_seed_same_network_and_other_seeds_differ() -> None:
    first = generate(GeneratorParams(256, 4, seed=5, bias=-0.3))
    again = generate(GeneratorParams(256, 4, seed=5, bias=-0.3))
    other = generate(GeneratorParams(256, 4, seed=6, bias=-0.3))
    assert all(same_matrix(a, b) for a, b in zip(first.layers, again.layers, strict=True))
    assert first.fingerprint() == again.fingerprint()
    assert all(not same_matrix(a, b) for a, b in zip(first.layers, other.layers, strict=True))
    assert first.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    ("neurons", "bias"), [(1024, -0.3), (4096, -0.35), (16384, -0.4), (65536, -0.45)]
)
def test_bias_defaults_by_neurons(neurons: int, bias: float) -> None:
    assert generate(GeneratorParams(neurons, 1)).bias == bias
    assert generate(GeneratorParams(neurons, 1, bias=-0.125)).bias == -0.125


def test_unknown_neuron_count_needs_an_explicit_bias() -> None:
    with pytest.raises(ConfigError, match=r"no default bias for 96 neurons.*--bias"):
        generate(GeneratorParams(96, 2))
    assert generate(GeneratorParams(96, 2, bias=-0.2)).bias == -0.2


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (GeneratorParams(64, 0, bias=-0.3), "--layers"),
        (GeneratorParams(64, 2, block=3, bias=-0.3), "--block"),
        (GeneratorParams(64, 2, block=32, bias=-0.3), "--block"),
        (GeneratorParams(65, 2, bias=-0.3), "divisible"),
        (GeneratorParams(30, 2, bias=-0.3), "too small"),
    ],
)
def test_impossible_parameters_are_config_errors(params: GeneratorParams, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        generate(params)


@pytest.mark.parametrize(("neurons", "block", "paths"), [(1024, 1, 1), (512, 2, 2)])
def test_butterfly_connects_every_input_to_every_output(neurons: int, block: int,
                                                        paths: int) -> None:
    """With N / B a power of the radix 32 / B, log_r(N / B) layers reach every output from
    every input, through exactly one super-node path (B choices inside each dense block)."""
    network = generate(GeneratorParams(neurons, 2, seed=1, block=block, bias=-0.3))
    reach = (pattern(network.layers[0]) @ pattern(network.layers[1])).toarray()
    assert np.all(reach == paths)


def test_layer_one_keeps_pixel_ids_on_its_input_side() -> None:
    """N = 64, B = 2, radix 16: pixel i sits in super-node i // 2, which feeds super-nodes
    m .. m + 15 (mod 32) in layer 1 (stride 1). Renaming only the outputs, two pixels share
    2 * (16 - d) outputs, d the circular distance of their super-nodes. A renamed input
    side would scatter this band."""
    m = np.arange(64) // 2
    delta = np.abs(m[:, None] - m[None, :])
    expected = 2 * (16 - np.minimum(delta, 32 - delta))
    later = []
    for seed in (0, 1, 2):
        network = generate(GeneratorParams(64, 2, seed=seed, bias=-0.3))
        shared = pattern(network.layers[0]) @ pattern(network.layers[0]).T
        np.testing.assert_array_equal(shared.toarray(), expected)
        later.append((pattern(network.layers[1]) @ pattern(network.layers[1]).T).toarray())
    # Layer 2's inputs are renamed per seed, so the same statistic moves with the seed.
    assert not np.array_equal(later[0], later[1])
    assert not np.array_equal(later[0], expected)


# ----------------------------------------------------------------------------- same function


@pytest.mark.parametrize(("neurons", "layers", "bias"), [(64, 8, -0.25), (256, 12, -0.375)])
def test_seeds_compute_the_same_function(neurons: int, layers: int, bias: float) -> None:
    """Consistent relabelling: the final activations are the same up to a renaming of the
    output neurons, so each row's sorted values, and the categories, match bit for bit."""
    x = dyadic_inputs(40, neurons, seed=neurons)
    results = [infer(generate(GeneratorParams(neurons, layers, seed=s, bias=bias)), x)
               for s in (0, 1, 7)]
    first = results[0]
    assert 0 < first.categories.size < x.shape[0]  # neither everything nor nothing
    for other in results[1:]:
        np.testing.assert_array_equal(other.categories, first.categories)
        assert sorted_rows(other.activations) == sorted_rows(first.activations)
    # The labels do change: the same values sit in other columns.
    assert not np.array_equal(results[1].activations.indices, first.activations.indices)


def test_an_inconsistent_relabelling_would_be_noticed() -> None:
    """Control for the test above: renaming the rows of W2 without the columns of W1
    changes what the network computes."""
    x = dyadic_inputs(40, 64, seed=64)
    network = generate(GeneratorParams(64, 8, seed=0, bias=-0.25))
    shuffled = sp.csr_matrix(network.layers[1][np.random.default_rng(3).permutation(64)])
    broken = Network(64, (network.layers[0], shuffled, *network.layers[2:]), network.bias)
    assert sorted_rows(infer(broken, x).activations) != sorted_rows(infer(network, x).activations)


def test_seeds_give_the_same_categories_on_mnist() -> None:
    """The one test on the shipped sample: real images, the default 1024-neuron bias."""
    images = read_input(sample_input_path(), neurons=1024)[:400]
    categories = [infer(generate(GeneratorParams(1024, 6, seed=s)), images).categories
                  for s in (0, 1, 2)]
    assert 0 < categories[0].size < 400
    for other in categories[1:]:
        np.testing.assert_array_equal(other, categories[0])


# ----------------------------------------------------------------------------- calibration


def test_the_period_keeps_the_first_strides_and_the_degrees() -> None:
    assert GeneratorParams(1024, 1).cycle() == [1, 16]  # the demo network: all strides
    assert GeneratorParams(1024, 1, period=1).cycle() == [1]
    assert GeneratorParams(4096, 1, block=4, bias=-0.3).cycle() == [1, 8, 64]
    network = generate(GeneratorParams(512, 4, seed=2, block=4, bias=-0.3, period=1))
    for w in network.layers:
        out_degree, in_degree = degrees(w)
        assert np.all(out_degree == 32) and np.all(in_degree == 32)
    # stride 1 only: a band, so two layers reach far fewer outputs than the full butterfly
    banded = (pattern(network.layers[0]) @ pattern(network.layers[1])).nnz
    full = generate(GeneratorParams(512, 4, seed=2, block=4, bias=-0.3))
    assert banded < (pattern(full.layers[0]) @ pattern(full.layers[1])).nnz


@pytest.mark.parametrize("period", [0, 3])
def test_a_period_beyond_the_butterfly_is_a_config_error(period: int) -> None:
    with pytest.raises(ConfigError, match=r"--period must be between 1 and 2"):
        generate(GeneratorParams(1024, 1, period=period))
