"""The binary ``.fsdm`` bundle: exact round trips, narrow index types, and damaged files."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_inference.exceptions import FsdError, InputFormatError
from fsd_inference.model.binary import load_network, save_network, write_bundle
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network

VALUES = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != 0)


@st.composite
def layers(draw: st.DrawFn, neurons: int) -> sp.csr_matrix:
    keys = st.tuples(st.integers(0, neurons - 1), st.integers(0, neurons - 1))
    cells = draw(st.sets(keys, max_size=min(neurons * neurons, 40)))
    if draw(st.booleans()):  # all weights equal, as in every Graph Challenge layer
        constant = draw(VALUES)
        values = [constant] * len(cells)
    else:
        values = draw(st.lists(VALUES, min_size=len(cells), max_size=len(cells)))
    rows = [r for r, _ in cells]
    cols = [c for _, c in cells]
    return sp.csr_matrix((values, (rows, cols)), shape=(neurons, neurons), dtype=np.float64)


@st.composite
def networks(draw: st.DrawFn) -> Network:
    neurons = draw(st.integers(1, 300))
    depth = draw(st.integers(1, 3))
    bias = draw(st.floats(-1, 1))
    return Network(neurons, tuple(draw(layers(neurons)) for _ in range(depth)), bias)


def assert_same_layer(got: sp.csr_matrix, expected: sp.csr_matrix, dtype: str) -> None:
    got = sp.csr_matrix(got)
    want = sp.csr_matrix(expected, copy=True)
    want.sort_indices()
    got.sort_indices()
    assert got.shape == want.shape
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.data.tobytes() == want.data.astype(dtype).tobytes()


# float64 weights beyond the float32 range load as inf in float32, as numpy's cast does.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=30, deadline=None)
@given(networks())
def test_bundle_round_trip_is_exact(network: Network) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.fsdm"
        save_network(network, path)
        back = load_network(path)
        as_float32 = load_network(path, dtype="float32")
    assert (back.neurons, back.depth, back.bias) == (network.neurons, network.depth,
                                                     network.bias)
    assert as_float32.bias == network.bias
    for k in range(network.depth):
        assert_same_layer(back.layers[k], network.layers[k], "float64")
        assert_same_layer(as_float32.layers[k], network.layers[k], "float32")


@pytest.mark.parametrize("neurons", [255, 256, 257, 65535, 65536, 65537])
def test_indices_at_the_edges_of_the_narrow_index_types(tmp_path: Path, neurons: int) -> None:
    last = neurons - 1
    cells = [(0, 0), (0, last), (last, 0), (last, last), (last // 2, last - 1)]
    values = [0.5, -1.0, 2.0, 0.0625, 3.0]
    layer = sp.csr_matrix((values, ([r for r, _ in cells], [c for _, c in cells])),
                          shape=(neurons, neurons))
    network = Network(neurons, (layer,), -0.3)
    save_network(network, tmp_path / "n.fsdm")
    assert_same_layer(load_network(tmp_path / "n.fsdm").layers[0], layer, "float64")


def test_many_entries_per_layer(tmp_path: Path) -> None:
    """More than 255 and 65535 stored weights: the row pointers need wider types."""
    rng = np.random.default_rng(7)
    dense = sp.random(300, 300, density=0.8, random_state=rng, format="csr")
    network = Network(300, (dense, sp.csr_matrix(dense.toarray()[:, ::-1])), 0.125)
    assert dense.nnz > 65535
    save_network(network, tmp_path / "n.fsdm")
    back = load_network(tmp_path / "n.fsdm")
    for got, want in zip(back.layers, network.layers, strict=True):
        assert_same_layer(got, want, "float64")


def test_load_model_reads_folders_and_bundles_alike(tmp_path: Path) -> None:
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / "n3-l1.tsv").write_text("1\t2\t0.5\n3\t1\t-2\n", encoding="utf-8")
    (folder / "n3-l2.tsv").write_text("2\t2\t1\n", encoding="utf-8")
    from_folder = load_model(folder, bias=0.25)
    save_network(from_folder, tmp_path / "net.fsdm")
    from_bundle = load_model(tmp_path / "net.fsdm")
    assert from_bundle.bias == 0.25
    assert from_bundle.fingerprint() == from_folder.fingerprint()
    assert load_model(tmp_path / "net.fsdm", bias=-0.5).bias == -0.5
    as_float32 = load_model(tmp_path / "net.fsdm", dtype="float32")
    assert all(w.dtype == np.float32 for w in as_float32.layers)
    assert sp.csr_matrix(from_bundle.layers[0]).toarray().tolist() == [
        [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]
    ]


# ----------------------------------------------------------------------------- damaged files


def small_bundle(path: Path) -> bytes:
    layer = sp.csr_matrix(([0.5, -1.0, 2.0], ([0, 1, 3], [2, 0, 3])), shape=(4, 4))
    constant = sp.csr_matrix(([0.0625] * 3, ([0, 2, 3], [1, 1, 0])), shape=(4, 4))
    save_network(Network(4, (layer, constant), -0.3), path)
    return path.read_bytes()


@pytest.mark.parametrize("keep", [0, 10, 0.5, -22, -1])
def test_truncated_bundle_is_an_input_format_error(tmp_path: Path, keep: float) -> None:
    whole = small_bundle(tmp_path / "good.fsdm")
    cut = int(len(whole) * keep) if isinstance(keep, float) else keep
    damaged = tmp_path / "cut.fsdm"
    damaged.write_bytes(whole[:cut])
    with pytest.raises(InputFormatError) as caught:
        load_network(damaged)
    assert caught.value.path == str(damaged)


@pytest.mark.parametrize("content", [b"hello\n", b"\x00" * 64, b"PK\x03\x04garbage"])
def test_not_a_bundle_is_an_input_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.fsdm"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=r"x\.fsdm"):
        load_network(path)


def test_missing_bundle_is_an_input_format_error(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no such file"):
        load_network(tmp_path / "absent.fsdm")


def test_other_bundles_are_refused(tmp_path: Path) -> None:
    write_bundle(tmp_path / "shard.fsdm", {"kind": "shard"}, {"x": np.arange(3)})
    with pytest.raises(InputFormatError, match="not a network"):
        load_network(tmp_path / "shard.fsdm")
    with zipfile.ZipFile(tmp_path / "plain.fsdm", "w") as archive:
        archive.writestr("x.npy", b"")
    with pytest.raises(InputFormatError):
        load_network(tmp_path / "plain.fsdm")


def test_every_single_byte_corruption_is_caught_or_harmless(tmp_path: Path) -> None:
    """Flip bytes all over the file: the load either fails with InputFormatError or, where
    the byte is one the zip format does not check (timestamps, ...), yields the same network.

    Every 5th offset keeps this fast while still hitting headers and compressed data of
    every member."""
    whole = small_bundle(tmp_path / "good.fsdm")
    expected = load_network(tmp_path / "good.fsdm").fingerprint()
    damaged = tmp_path / "flipped.fsdm"
    escaped = []
    for offset in range(0, len(whole), 5):
        data = bytearray(whole)
        data[offset] ^= 0xFF
        damaged.write_bytes(bytes(data))
        try:
            assert load_network(damaged).fingerprint() == expected, offset
        except FsdError:
            pass
        except Exception as exc:  # collecting what escapes is the point
            escaped.append((offset, type(exc).__name__))
    assert escaped == []
