"""The fused C kernel against SciPy's arithmetic, raw bytes, in both dtypes.

SciPy (csr_matmat, then bias, clip, eliminate_zeros, sort_indices) is the independent
check: ``ScipyKernel.single`` on one whole matrix multiplies exactly as the project did
before the fused kernel existed. Every comparison is of index arrays and of the raw
bytes of the values, so a different rounding anywhere would show.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsd_inference.kernel import ColumnMap, KernelError, LayerWeights, Piece, library, twins
from fsd_inference.kernel.base import join_rows
from fsd_inference.kernel.fused import FusedKernel, row_blocks
from fsd_inference.kernel.scipy_kernel import ScipyKernel
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input

DTYPES = ["float64", "float32"]
THREADS = [1, 2]
SCIPY = ScipyKernel()


def fused(threads: int) -> FusedKernel:
    """The fused kernel cutting even tiny batches into many blocks, so two threads
    really share the rows."""
    kernel = FusedKernel(threads)
    kernel.min_block_rows = 1
    return kernel


def assert_same_bits(got: sp.csr_matrix, want: sp.csr_matrix) -> None:
    assert got.shape == want.shape
    assert got.has_sorted_indices
    want = sp.csr_matrix(want)
    want.sort_indices()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.data.dtype == want.data.dtype
    assert got.data.tobytes() == want.data.tobytes()


@functools.cache
def mnist(rows: int) -> sp.csr_matrix:
    return read_input(sample_input_path(), neurons=1024)[:rows]


@functools.cache
def radixnet(block: int) -> Network:
    return generate(GeneratorParams(1024, 8, seed=5, block=block))


# ----------------------------------------------------------------------------- generated


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [2, 16])
def test_generated_networks_match_scipy(block: int, dtype: str, threads: int) -> None:
    net, x = radixnet(block), mnist(700)
    kernel = fused(threads)
    got = infer(net, x, dtype, kernel=kernel)
    want = infer(net, x, dtype, kernel=SCIPY)
    assert 0 < want.categories.size < x.shape[0]
    np.testing.assert_array_equal(got.categories, want.categories)
    assert_same_bits(got.activations, want.activations)
    # every weight is 1/16: the rows with input took the power-of-two path
    assert kernel.scaled_rows == np.count_nonzero(np.diff(
        infer(Network(net.neurons, net.layers[:-1], net.bias), x, dtype,
              kernel=SCIPY).activations.indptr))


# ----------------------------------------------------------------------------- arbitrary

KINDS = ("normal", "dyadic", "wide", "tiny", "huge", "power_of_two")


def random_values(rng: np.random.Generator, kind: str, size: int, dtype: str) -> np.ndarray:
    """Values of one flavour: the flavours reach cancellation to exact zero (dyadic),
    explicit zeros, products below the normal range (tiny) and overflow (huge)."""
    info = np.finfo(dtype)
    if kind == "normal":
        values = rng.normal(size=size)
    elif kind == "dyadic":
        values = rng.integers(-8, 9, size) / 4.0
    elif kind == "wide":
        values = rng.normal(size=size) * 2.0 ** rng.integers(-40, 40, size)
    elif kind == "tiny":
        values = float(info.tiny) * rng.integers(-(2**12), 2**12, size) / 2.0 ** rng.integers(
            -30, 8, size)
    elif kind == "huge":
        values = float(info.max) * rng.uniform(-0.6, 0.6, size)
    else:
        values = np.full(size, rng.choice([-1.0, 1.0]) * 2.0 ** int(rng.integers(-6, 6)))
    return values.astype(dtype)


def random_matrix(rng: np.random.Generator, shape: tuple[int, int], density: float,
                  kind: str, dtype: str) -> sp.csr_matrix:
    mask = rng.random(shape) < density
    dense = np.zeros(shape, dtype=dtype)
    dense[mask] = random_values(rng, kind, int(mask.sum()), dtype)
    rows, cols = np.nonzero(mask)  # keep explicit zeros: SciPy multiplies them too
    return sp.csr_matrix((dense[rows, cols], (rows, cols)), shape=shape, dtype=dtype)


@st.composite
def layer_cases(draw: st.DrawFn) -> tuple[list[sp.csr_matrix], sp.csr_matrix, float, str]:
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    widths = draw(st.lists(st.integers(0, 40), min_size=2, max_size=4))
    rows = draw(st.integers(0, 50))
    weights = [random_matrix(rng, (a, b), draw(st.floats(0, 1)), draw(st.sampled_from(KINDS)),
                             dtype) for a, b in itertools.pairwise(widths)]
    y = random_matrix(rng, (rows, widths[0]), draw(st.floats(0, 1)),
                      draw(st.sampled_from(KINDS)), dtype)
    bias = draw(st.sampled_from([-0.3, -0.35, 0.0, 0.5, -2.0, 1e-30, -1e-40]))
    return weights, y, bias, dtype


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SciPy's inf - inf on the huge cases
@pytest.mark.parametrize("threads", THREADS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layer_cases())
def test_arbitrary_weights_match_scipy(threads: int,
                                       case: tuple[list[sp.csr_matrix], sp.csr_matrix, float,
                                                   str]) -> None:
    weights, y, bias, _ = case
    kernel = fused(threads)
    got = want = y
    for w in weights:
        layer = LayerWeights(w)
        got = kernel.single(got, layer, bias)
        want = SCIPY.single(want, layer, bias)
        assert_same_bits(got, want)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("threads", THREADS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layer_cases())
def test_layers_chained_as_row_blocks_match_scipy(
        threads: int, case: tuple[list[sp.csr_matrix], sp.csr_matrix, float, str]) -> None:
    """step_pieces hands each layer's blocks to the next as pieces (read in place where
    one piece holds a row); joined, every layer's output is SciPy's."""
    weights, y, bias, _ = case
    kernel = fused(threads)
    batch = y.shape[0]
    parts, want = [Piece(y)], y
    for w in weights:
        layer = LayerWeights(w)
        parts = kernel.step_pieces(parts, batch, layer, bias)
        want = SCIPY.single(want, layer, bias)
        assert_same_bits(join_rows(parts, batch), want)


def test_a_generated_network_runs_on_row_blocks_without_joining_them() -> None:
    net, x = radixnet(16), mnist(700)
    kernel = fused(2)
    parts = [Piece(sp.csr_matrix(x, dtype=np.float64))]
    for w in net.layers:
        parts = kernel.step_pieces(parts, x.shape[0], LayerWeights(w), net.bias)
        assert len(parts) > 1 and all(p.rows is not None for p in parts)  # blocks, as is
    assert_same_bits(join_rows(parts, x.shape[0]),
                     infer(net, x, "float64", kernel=SCIPY).activations)


def test_row_pieces_join_only_when_they_are_the_batch_in_order() -> None:
    block = sp.csr_matrix(np.ones((2, 3)))
    rows = [np.array([0, 1]), np.array([2, 3])]
    assert join_rows([Piece(block, rows[0]), Piece(block, rows[1])], 4).shape == (4, 3)
    with pytest.raises(KernelError, match="consecutive row ranges"):
        join_rows([Piece(block, rows[1]), Piece(block, rows[0])], 4)
    with pytest.raises(KernelError, match="hold 4 rows of a batch of 5"):
        join_rows([Piece(block, rows[0]), Piece(block, rows[1])], 5)


# ----------------------------------------------------------------------------- power of two


def one_column(values: list[float], scale: float, dtype: str) -> tuple[sp.csr_matrix,
                                                                       LayerWeights]:
    y = sp.csr_matrix(np.asarray([values], dtype=dtype))
    w = sp.csr_matrix(np.full((len(values), 1), scale, dtype=dtype))
    return y, LayerWeights(w)


def test_products_below_the_normal_range_take_the_exact_path() -> None:
    a = (1 + 2.0**-52) * 2.0**-1019
    y, w = one_column([a, a], 2.0**-4, "float64")
    shortcut = (a + a) * 2.0**-4  # one scaling of the plain sum: rounds differently here
    products = a * 2.0**-4 + a * 2.0**-4  # what SciPy computes
    assert shortcut != products
    kernel = fused(1)
    got = kernel.single(y, w, 0.0)
    assert kernel.scaled_rows == 0  # the guard sent the row down the general path
    assert_same_bits(got, SCIPY.single(y, w, 0.0))
    assert got.data[0] == products


def test_sums_that_overflow_when_scaled_take_the_exact_path() -> None:
    big = 1.5 * 2.0**124
    y, w = one_column([big, -big], 16.0, "float32")
    kernel = fused(1)
    with np.errstate(invalid="ignore", over="ignore"):
        want = SCIPY.single(y, w, -0.3)
    assert np.isnan(want.data).all()  # inf - inf: a stored NaN, where the plain sum is 0
    got = kernel.single(y, w, -0.3)
    assert kernel.scaled_rows == 0
    assert_same_bits(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ordinary_rows_take_the_power_of_two_path(dtype: str) -> None:
    y, w = one_column([0.25, 3.0, 0.0, 7.5], 2.0**-4, dtype)
    kernel = fused(1)
    got = kernel.single(y, w, -0.3)
    assert kernel.scaled_rows == 1
    assert_same_bits(got, SCIPY.single(y, w, -0.3))


def test_mixed_weights_never_take_the_power_of_two_path() -> None:
    y = sp.csr_matrix(np.ones((3, 2)))
    w = LayerWeights(sp.csr_matrix(np.array([[0.0625, 0.0625], [0.0625, 0.125]])))
    kernel = fused(1)
    kernel.single(y, w, 0.0)
    assert kernel.scaled_rows == 0


# ----------------------------------------------------------------------------- pieces


@st.composite
def piece_cases(draw: st.DrawFn) -> tuple[list[Piece], sp.csr_matrix, LayerWeights, int]:
    """A layer input cut into pieces the way a worker receives it: its own columns
    (with unneeded ones that feed nothing), peers' blocks of nonempty rows only, and
    blocks whose one column stands for several twin inputs. Returns the pieces, the same
    input built independently as one dense matrix, the weights and the batch."""
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch, n_in, n_out = draw(st.integers(0, 40)), draw(st.integers(1, 60)), \
        draw(st.integers(0, 30))
    owner = rng.integers(0, draw(st.integers(1, 5)), n_in)
    dense = np.zeros((batch, n_in), dtype=dtype)
    pieces = []
    for p in np.unique(owner):
        positions = np.flatnonzero(owner == p)
        if p == 0:  # own columns: a wider block, some columns feed nothing
            width = positions.size + int(rng.integers(0, 4))
            slots = np.sort(rng.choice(width, positions.size, replace=False))
            block = random_matrix(rng, (batch, width), float(rng.random()), "normal", dtype)
            dense[:, positions] = block.toarray()[:, slots]
            own = ColumnMap.gather(positions, slots, width)
            # whole, or as the previous step's row blocks (a worker with kernel threads)
            cuts = np.unique(np.r_[0, rng.integers(0, batch + 1, draw(st.integers(0, 2))),
                                   batch])
            if cuts.size <= 2:
                pieces.append(Piece(block, columns=own))
            else:
                pieces += [Piece(sp.csr_matrix(block[a:b]), np.arange(a, b), own)
                           for a, b in itertools.pairwise(cuts.tolist())]
            continue
        width = int(rng.integers(1, positions.size + 1))  # twins: columns shared
        columns = rng.integers(0, width, positions.size)
        columns[:width] = np.arange(width)[:min(width, positions.size)]
        block = random_matrix(rng, (batch, width), float(rng.random()), "wide", dtype)
        rows = np.flatnonzero(np.diff(block.indptr))
        dense[:, positions] = block.toarray()[:, columns]
        pieces.append(Piece(sp.csr_matrix(block[rows]), rows, ColumnMap.gather(
            positions, columns, width)))
    order = rng.permutation(len(pieces))
    weights = LayerWeights(random_matrix(rng, (n_in, n_out), float(rng.random()),
                                         draw(st.sampled_from(KINDS)), dtype))
    return [pieces[i] for i in order], sp.csr_matrix(dense), weights, batch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("threads", THREADS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=piece_cases())
def test_pieces_merge_in_ascending_order(threads: int, case: tuple[list[Piece],
                                                                   sp.csr_matrix,
                                                                   LayerWeights, int]) -> None:
    pieces, whole, weights, batch = case
    want = SCIPY.single(whole, weights, -0.25)
    assert_same_bits(fused(threads).step(pieces, batch, weights, -0.25), want)
    assert_same_bits(SCIPY.step(pieces, batch, weights, -0.25), want)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("threads", THREADS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=piece_cases(), seed=st.integers(0, 2**32 - 1),
       bias=st.sampled_from([-0.25, 0.0, 0.25]))
def test_extracted_columns_are_the_outputs_columns(threads: int, seed: int, bias: float,
                                                   case: tuple[list[Piece], sp.csr_matrix,
                                                               LayerWeights, int]) -> None:
    """What a worker sends, taken by the kernel from the sums, against the SciPy
    reference's output sliced to the same columns (raw bits), on every path; a positive
    bias tells a zero sum (not stored, no bias) from a stored one."""
    pieces, whole, weights, batch = case
    n_out = weights.shape[1]
    rng = np.random.default_rng(seed)
    extract = np.flatnonzero(rng.random(n_out) < rng.random())
    want = SCIPY.single(whole, weights, bias)
    for kernel in (fused(threads), SCIPY):
        out, sent = kernel.step_extract(pieces, batch, weights, bias, extract)
        assert_same_bits(join_rows(out, batch), want)
        assert_same_bits(sent, want[:, extract])


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [2, 16])
def test_generated_networks_extract_on_the_twin_and_scaled_paths(block: int, dtype: str,
                                                                  threads: int) -> None:
    net, x = radixnet(block), mnist(300)
    kernel = fused(threads)
    y = sp.csr_matrix(x, dtype=dtype)
    twin_rows = scaled_rows = 0
    for w in net.layers[:4]:
        weights = LayerWeights(w.astype(dtype))
        extract = np.arange(3, net.neurons, 7)
        out, sent = kernel.step_extract([Piece(y)], y.shape[0], weights, net.bias, extract)
        twin_rows, scaled_rows = twin_rows + kernel.twin_rows, scaled_rows + kernel.scaled_rows
        want = SCIPY.single(y, weights, net.bias)
        assert_same_bits(sent, want[:, extract])
        y = join_rows(out, y.shape[0])
        assert_same_bits(y, want)
    # blocks of 2 take the twin path, blocks of 16 (all weights 1/16) the scaled one
    assert (twin_rows if block == 2 else scaled_rows) > 0


def test_columns_to_extract_must_ascend_within_the_outputs() -> None:
    layer = LayerWeights(sp.csr_matrix(np.ones((3, 4))))
    y = sp.csr_matrix(np.ones((2, 3)))
    for kernel in (fused(1), SCIPY):
        for bad in (np.array([2, 1]), np.array([0, 4]), np.array([-1]), np.array([1, 1]),
                    np.array([[0]]), np.array([0.5])):
            with pytest.raises(KernelError, match="columns to extract"):
                kernel.step_extract([Piece(y)], 2, layer, 0.0, bad)
        _, sent = kernel.step_extract([Piece(y)], 2, layer, 0.0, np.zeros(0, np.int64))
        assert sent.shape == (2, 0) and sent.nnz == 0


# ----------------------------------------------------------------------------- edges


def test_row_blocks_cover_every_row_once_with_balanced_work() -> None:
    work = np.r_[np.zeros(300, np.int64), np.full(100, 50), np.zeros(600, np.int64)]
    blocks = row_blocks(work, 4, min_rows=1)
    assert blocks[0][0] == 0 and blocks[-1][1] == work.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    loads = [int(work[a:b].sum()) for a, b in blocks]
    assert max(loads) <= 2 * (work.sum() + work.size) / 4
    # two blocks at most (400-row minimum), cut where half the work (6,000 units) is done
    assert row_blocks(work, 4, min_rows=400) == [(0, 352), (352, 1000)]


@pytest.mark.parametrize("kernel", [fused(1), SCIPY], ids=["fused", "scipy"])
def test_mismatched_operands_are_kernel_errors(kernel: object) -> None:
    assert isinstance(kernel, (FusedKernel, ScipyKernel))
    w = LayerWeights(sp.csr_matrix(np.eye(3)))
    with pytest.raises(KernelError, match="float32 input piece against float64"):
        kernel.step([Piece(sp.csr_matrix(np.eye(3, dtype=np.float32)))], 3, w, 0.0)
    with pytest.raises(KernelError, match="piece of 2 rows for a batch of 3"):
        kernel.step([Piece(sp.csr_matrix(np.ones((2, 3))))], 3, w, 0.0)


def test_malformed_pieces_are_refused_not_read_out_of_bounds() -> None:
    w = LayerWeights(sp.csr_matrix(np.eye(3)))
    kernel = fused(1)
    outside = ColumnMap(np.array([0, 1, 2]), np.array([0, 3]))  # position 3 of 3 rows
    with pytest.raises(KernelError, match="outside the weights' rows"):
        kernel.step([Piece(sp.csr_matrix(np.ones((2, 2))), columns=outside)], 2, w, 0.0)
    wide = sp.csr_matrix(np.ones((2, 4)))  # 4 columns, W has 3 rows
    with pytest.raises(KernelError, match="input column outside"):
        kernel.step([Piece(wide)], 2, w, 0.0)
    with pytest.raises(KernelError, match="not ascending"):
        kernel.step([Piece(sp.csr_matrix(np.ones((2, 3))), np.array([1, 0]))], 2, w, 0.0)


# ----------------------------------------------------------------------------- twins


def brute_force_classes(matrix: sp.csr_matrix) -> list[list[int]]:
    """Outputs grouped by identical weight column, compared as Python tuples."""
    dense = matrix.tocsc()
    groups: dict[tuple[tuple[int, bytes], ...], list[int]] = {}
    for k in range(matrix.shape[1]):
        column = dense[:, [k]]
        column.sort_indices()
        key = tuple(zip(column.indices.tolist(), [v.tobytes() for v in column.data],
                        strict=True))
        groups.setdefault(key, []).append(k)
    return sorted(groups.values())


@st.composite
def twin_cases(draw: st.DrawFn) -> tuple[sp.csr_matrix, sp.csr_matrix, str]:
    """Weights whose columns repeat (each copy of a column identical, arbitrary values,
    an occasional near-copy that differs in one value), and inputs dense enough that
    most rows take the twin path."""
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in, distinct = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    base = random_matrix(rng, (n_in, distinct), float(rng.uniform(0.1, 1)),
                         draw(st.sampled_from(KINDS)), dtype).toarray()
    columns = rng.integers(0, distinct, draw(st.integers(2 * distinct, 6 * distinct)))
    w = base[:, columns]
    if draw(st.booleans()) and np.count_nonzero(w[:, 0]):
        with np.errstate(over="ignore"):  # a huge weight doubles to inf: still a near-twin
            w[np.flatnonzero(w[:, 0])[0], 0] *= 2  # a near-twin: one weight differs
    y = random_matrix(rng, (draw(st.integers(0, 30)), n_in), float(rng.uniform(0.3, 1)),
                      "normal", dtype)
    return sp.csr_matrix(w), y, dtype


def compiled_twins(w: sp.spmatrix) -> twins.Twins:
    lib = library.load()
    assert lib is not None, library.load_error()
    return twins.compiled_twins(lib, w)


# the library's pass (what the kernel and the plan use) and NumPy's (their fallback)
TWIN_FINDERS = {"compiled": compiled_twins, "numpy": twins.numpy_twins}


def classes_of(found: twins.Twins) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(found.class_of.tolist()):
        groups.setdefault(c, []).append(k)
    return groups


@pytest.mark.parametrize("finder", TWIN_FINDERS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=twin_cases())
def test_twin_classes_are_exactly_the_identical_columns(
        finder: str, case: tuple[sp.csr_matrix, sp.csr_matrix, str]) -> None:
    w, _, _ = case
    found = TWIN_FINDERS[finder](w)
    groups = classes_of(found)
    assert sorted(groups.values()) == brute_force_classes(w)
    assert found.representatives.tolist() == [groups[c][0] for c in range(found.classes)]


@pytest.mark.parametrize("finder", TWIN_FINDERS)
def test_twin_classes_stay_exact_when_every_hash_collides(
        finder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A column that differs from its bucket's leader is regrouped with the others that
    did, so colliding hashes cannot split a class (hypothesis found a split once)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 4))
    w = sp.csr_matrix(base[:, rng.integers(0, 4, 30)])
    if finder == "compiled":
        lib = library.load()
        assert lib is not None, library.load_error()
        found = twins.compiled_twins(lib, w, hash_mask=0)
    else:
        monkeypatch.setattr(twins, "_column_hashes",
                            lambda csc: np.zeros(csc.shape[1], dtype=np.uint64))
        found = twins.numpy_twins(w)
    assert sorted(classes_of(found).values()) == brute_force_classes(w)
    assert found.classes == 4


def test_twin_classes_of_a_matrix_with_duplicate_entries_are_those_of_its_sums() -> None:
    """A non-canonical W (a duplicate entry, unsorted columns) is summed first."""
    # row 0 holds column 0 twice (1 + 1) and column 1 once (2): equal once summed
    w = sp.csr_matrix((np.array([1.0, 2.0, 1.0]), np.array([0, 1, 0]), np.array([0, 3])),
                      shape=(1, 3))
    assert not w.has_canonical_format
    for finder in TWIN_FINDERS.values():
        assert sorted(classes_of(finder(w)).values()) == [[0, 1], [2]]


def test_compiled_twins_refuse_a_column_outside_the_matrix() -> None:
    """The C pass indexes its per-column arrays by W's columns: they are checked first."""
    w = sp.csr_matrix((2, 3))
    w.indptr, w.indices, w.data = np.array([0, 1, 1]), np.array([7]), np.array([1.0])
    with pytest.raises(KernelError, match=r"a column outside 0\.\.2"):
        compiled_twins(w)


def test_twin_classes_of_16_bit_values_are_found_too() -> None:
    """The library compares 32- and 64-bit values; other widths take NumPy's path."""
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, size=(5, 3)).astype(np.int16)
    w = sp.csr_matrix(base[:, rng.integers(0, 3, 12)])
    found = twins.twin_outputs(w)
    assert sorted(classes_of(found).values()) == brute_force_classes(w)
    assert found.classes == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("threads", THREADS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=twin_cases())
def test_twin_outputs_match_scipy(threads: int,
                                  case: tuple[sp.csr_matrix, sp.csr_matrix, str]) -> None:
    w, y, _ = case
    kernel, layer = fused(threads), LayerWeights(w)
    assert_same_bits(kernel.single(y, layer, -0.125), SCIPY.single(y, layer, -0.125))


def test_generated_networks_take_the_twin_path() -> None:
    net, x = radixnet(2), mnist(300)
    kernel = fused(1)
    y = sp.csr_matrix(x, dtype=np.float64)
    y.sort_indices()
    kernel.single(y, LayerWeights(net.layers[0]), net.bias)
    assert kernel.twin_rows == np.count_nonzero(np.diff(y.indptr)) > 0


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_result_owns_the_kernels_buffers_until_its_last_view_is_gone(dtype: str) -> None:
    """One block's arrays become the result's without a copy (fsd_detach); a view that
    outlives the matrix keeps its values through later layers that reuse the heap."""
    import gc

    network = radixnet(16).astype(dtype)
    weights = [LayerWeights(w) for w in network.layers]
    kernel = FusedKernel(1)
    y = sp.csr_matrix(mnist(300), dtype=dtype)
    first = kernel.step([Piece(y)], y.shape[0], weights[0], network.bias)
    assert first.data.base is not None and first.indices.base is not None  # not copies
    want = SCIPY.step([Piece(y)], y.shape[0], weights[0], network.bias)
    tail_values, tail_columns = first.data[7:], first.indices[7:]
    del first
    gc.collect()
    z = want
    for w in weights[1:]:  # allocate and free layer after layer over the same heap
        z = kernel.step([Piece(z)], z.shape[0], w, network.bias)
    assert tail_values.tobytes() == want.data[7:].tobytes()
    np.testing.assert_array_equal(tail_columns, want.indices[7:])


def test_an_identity_column_map_is_recognised() -> None:
    """The worker drops a map that sends column c to position c (kernel reads the piece
    in place); any other map is kept."""
    assert ColumnMap.gather(np.arange(5), np.arange(5), 5).identity
    assert not ColumnMap.gather(np.arange(4), np.arange(4), 5).identity  # column 4 unused
    assert not ColumnMap.gather(np.array([0, 2, 1]), np.arange(3), 3).identity
    assert not ColumnMap.one_to_one(np.array([1, 2, 3])).identity


def test_a_column_map_is_ordered_when_each_column_feeds_one_later_position() -> None:
    # a worker's own columns: some feed nothing, the rest ascending positions
    assert ColumnMap.gather(np.array([0, 2, 5]), np.array([0, 1, 3]), 4).ordered
    assert ColumnMap.one_to_one(np.array([1, 2, 3])).ordered
    assert ColumnMap.gather(np.arange(0), np.arange(0), 3).ordered  # feeds nothing
    assert not ColumnMap.gather(np.array([2, 0]), np.array([0, 1]), 2).ordered  # descends
    assert not ColumnMap.gather(np.array([0, 1]), np.array([0, 0]), 1).ordered  # twins


def test_the_heap_keeps_freed_memory_where_glibc_allows() -> None:
    """kernel/heap.py: on glibc (this machine, Lambda) mallopt takes the thresholds."""
    import platform

    from fsd_inference.kernel.heap import retain_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is expected


def test_an_unknown_heap_mode_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsd_inference.exceptions import ConfigError
    from fsd_inference.kernel import heap

    heap.retain_freed_memory.cache_clear()
    try:
        monkeypatch.setenv("FSD_HEAP", "off")
        with pytest.raises(ConfigError, match="FSD_HEAP='off'"):
            heap.retain_freed_memory()
        monkeypatch.setenv("FSD_HEAP", "os")
        assert heap.retain_freed_memory() is False  # the defaults kept: nothing applied
    finally:
        heap.retain_freed_memory.cache_clear()  # the next caller tunes the heap again
