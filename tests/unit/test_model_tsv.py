"""The Graph Challenge text layout: network folders, input batches and categories.

Files are written here with plain Python in the published layout (1-based
``row<TAB>col<TAB>value``) and read with the project's readers, and the project's
writers' files are parsed here line by line, so each direction is checked against the
format rather than against the other direction.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_inference.exceptions import ConfigError, InputFormatError, ModelError
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import (
    layer_files,
    read_categories,
    read_input,
    read_network_dir,
    write_categories,
    write_input,
    write_network_dir,
)

# Any finite nonzero float64, subnormals and extremes included: %.17g must round-trip all.
VALUES = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != 0)
FAST = settings(max_examples=25, deadline=None)

Cells = dict[tuple[int, int], float]


@st.composite
def cells(draw: st.DrawFn, rows: int, cols: int, min_size: int = 1) -> Cells:
    """Nonzero entries of a rows x cols matrix, 0-based keys."""
    keys = st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1))
    return draw(st.dictionaries(keys, VALUES, min_size=min_size, max_size=min(rows * cols, 30)))


@st.composite
def networks(draw: st.DrawFn) -> tuple[int, list[Cells]]:
    neurons = draw(st.integers(1, 12))
    depth = draw(st.integers(1, 3))
    return neurons, [draw(cells(neurons, neurons)) for _ in range(depth)]


def to_csr(entries: Cells, shape: tuple[int, int]) -> sp.csr_matrix:
    keys = list(entries)
    return sp.csr_matrix(
        ([entries[k] for k in keys], ([r for r, _ in keys], [c for _, c in keys])), shape=shape
    )


def cells_of(matrix: sp.spmatrix) -> Cells:
    coo = sp.coo_matrix(matrix)
    return {(int(r), int(c)): float(v) for r, c, v in zip(coo.row, coo.col, coo.data,
                                                           strict=True)}


def file_text(entries: Cells) -> str:
    """Plain-Python rendering in the public layout (1-based, ``repr`` values)."""
    return "".join(f"{r + 1}\t{c + 1}\t{v!r}\n" for (r, c), v in sorted(entries.items()))


def parse_file(path: Path) -> list[tuple[int, int, float]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [line for line in handle.read().split("\n") if line]
    parsed = []
    for line in lines:
        row, col, value = line.split("\t")
        parsed.append((int(row), int(col), float(value)))
    return parsed


def same_bits(a: Cells, b: Cells) -> bool:
    """Equal keys and bit-identical values (so -0.0 vs 0.0 or rounding would show)."""
    return a.keys() == b.keys() and all(
        np.float64(a[k]).tobytes() == np.float64(b[k]).tobytes() for k in a
    )


# ----------------------------------------------------------------------------- networks


@FAST
@given(networks())
def test_network_folder_written_by_hand_reads_back_exactly(case: tuple[int, list[Cells]]) -> None:
    neurons, layers = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k, layer in enumerate(layers, start=1):
            (folder / f"n{neurons}-l{k}.tsv").write_text(file_text(layer), encoding="utf-8")
        network = read_network_dir(folder, bias=-0.25)
    assert network.neurons == neurons
    assert network.depth == len(layers)
    assert network.bias == -0.25
    for layer, expected in zip(network.layers, layers, strict=True):
        assert layer.shape == (neurons, neurons)
        assert layer.dtype == np.float64
        assert same_bits(cells_of(layer), expected)


@FAST
@given(networks())
def test_network_folder_writer_follows_the_layout(case: tuple[int, list[Cells]]) -> None:
    neurons, layers = case
    network = Network(neurons, tuple(to_csr(c, (neurons, neurons)) for c in layers), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_network_dir(network, Path(tmp) / "out")
        names = sorted(p.name for p in (Path(tmp) / "out").iterdir())
        parsed = [parse_file(p) for p in paths]
        back = read_network_dir(Path(tmp) / "out", bias=0.0)
    assert names == sorted(f"n{neurons}-l{k}.tsv" for k in range(1, len(layers) + 1))
    for lines, expected, layer in zip(parsed, layers, back.layers, strict=True):
        # One line per nonzero, 1-based, ordered by row then column, exact values.
        assert [(r, c) for r, c, _ in lines] == sorted((r + 1, c + 1) for r, c in expected)
        assert same_bits({(r - 1, c - 1): v for r, c, v in lines}, expected)
        assert same_bits(cells_of(layer), expected)


def test_network_folder_float32_and_gzipped_layers(tmp_path: Path) -> None:
    (tmp_path / "n3-l1.tsv").write_text("1\t2\t0.1\n3\t3\t2.5\n", encoding="utf-8")
    with gzip.open(tmp_path / "n3-l2.tsv.gz", "wt", encoding="utf-8") as out:
        out.write("2\t1\t-1e-3\n")
    network = read_network_dir(tmp_path, bias=0.5, dtype="float32")
    assert network.depth == 2
    assert all(w.dtype == np.float32 for w in network.layers)
    assert cells_of(network.layers[0]) == {(0, 1): float(np.float32(0.1)), (2, 2): 2.5}
    assert cells_of(network.layers[1]) == {(1, 0): float(np.float32(-1e-3))}


def test_layer_files_ignores_other_files_and_orders_by_layer(tmp_path: Path) -> None:
    for k in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9):
        (tmp_path / f"n8-l{k}.tsv").write_text("1\t1\t1\n", encoding="utf-8")
    (tmp_path / "README.txt").write_text("not a layer", encoding="utf-8")
    (tmp_path / "categories.tsv").write_text("1\n", encoding="utf-8")
    neurons, files = layer_files(tmp_path)
    assert neurons == 8
    assert [f.name for f in files] == [f"n8-l{k}.tsv" for k in range(1, 11)]


@pytest.mark.parametrize(("neurons", "bias"), [(1024, -0.3), (4096, -0.35)])
def test_network_folder_bias_defaults_by_neurons(tmp_path: Path, neurons: int,
                                                 bias: float) -> None:
    (tmp_path / f"n{neurons}-l1.tsv").write_text(f"{neurons}\t1\t0.0625\n", encoding="utf-8")
    assert read_network_dir(tmp_path).bias == bias
    assert read_network_dir(tmp_path, bias=0.25).bias == 0.25


def test_network_folder_without_default_bias_needs_one(tmp_path: Path) -> None:
    (tmp_path / "n5-l1.tsv").write_text("1\t1\t1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="5 neurons"):
        read_network_dir(tmp_path)


def test_network_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no layer files"):
        read_network_dir(tmp_path, bias=0.0)
    (tmp_path / "n4-l1.tsv").write_text("1\t1\t1\n", encoding="utf-8")
    (tmp_path / "n4-l3.tsv").write_text("1\t1\t1\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"missing layer file\(s\) 2\b"):
        read_network_dir(tmp_path, bias=0.0)
    (tmp_path / "n6-l2.tsv").write_text("1\t1\t1\n", encoding="utf-8")
    with pytest.raises(ModelError, match="4, 6"):
        read_network_dir(tmp_path, bias=0.0)


# ----------------------------------------------------------------------------- inputs


@FAST
@given(st.integers(1, 10), st.integers(1, 10), st.data(), st.booleans())
def test_input_written_by_hand_reads_back_exactly(rows: int, cols: int, data: st.DataObject,
                                                  gz: bool) -> None:
    entries = data.draw(cells(rows, cols))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.tsv.gz" if gz else "x.tsv")
        if gz:
            with gzip.open(path, "wt", encoding="utf-8") as out:
                out.write(file_text(entries))
        else:
            path.write_text(file_text(entries), encoding="utf-8")
        plain = read_input(path)
        wide = read_input(path, neurons=cols + 3)
    last_row = max(r for r, _ in entries) + 1
    last_col = max(c for _, c in entries) + 1
    assert plain.shape == (last_row, last_col)  # the file holds no other size information
    assert wide.shape == (last_row, cols + 3)
    assert same_bits(cells_of(plain), entries)
    assert same_bits(cells_of(wide), entries)


@FAST
@given(st.integers(1, 10), st.integers(1, 10), st.data(), st.booleans())
def test_input_writer_follows_the_layout(rows: int, cols: int, data: st.DataObject,
                                         gz: bool) -> None:
    entries = data.draw(cells(rows, cols))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.tsv.gz" if gz else "x.tsv")
        write_input(to_csr(entries, (rows, cols)), path)
        magic = path.read_bytes()[:2]
        lines = parse_file(path)
        back = read_input(path, neurons=cols)
    assert (magic == b"\x1f\x8b") == gz
    assert [(r, c) for r, c, _ in lines] == sorted((r + 1, c + 1) for r, c in entries)
    assert same_bits({(r - 1, c - 1): v for r, c, v in lines}, entries)
    assert same_bits(cells_of(back), entries)


def test_input_float32(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("1\t3\t0.1\n2\t1\t1\n", encoding="utf-8")
    x = read_input(path, neurons=4, dtype="float32")
    assert x.dtype == np.float32
    assert x.shape == (2, 4)
    assert cells_of(x) == {(0, 2): float(np.float32(0.1)), (1, 0): 1.0}


def test_input_accepts_missing_final_newline_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_bytes(b"1\t1\t1\r\n2\t2\t0.5")
    assert cells_of(read_input(path)) == {(0, 0): 1.0, (1, 1): 0.5}


# ----------------------------------------------------------------------------- categories


@FAST
@given(st.sets(st.integers(1, 10**9), max_size=40))
def test_categories_round_trip(ids: set[int]) -> None:
    expected = sorted(ids)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "categories.txt"
        write_categories(np.asarray(expected, dtype=np.int64), path)
        text = path.read_text(encoding="utf-8")
        back = read_categories(path)
    assert text == "".join(f"{i}\n" for i in expected)  # one 1-based id per line, ascending
    assert back.tolist() == expected


def test_categories_read_by_hand_written_file(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("3\n17\n\n1000000\n", encoding="utf-8")
    assert read_categories(path).tolist() == [3, 17, 1000000]
    path.write_text("", encoding="utf-8")
    assert read_categories(path).tolist() == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1\n0\n", 2), ("2\n1\n", 2), ("1\n1\n", 2), ("1\nx\n", 2), ("-4\n", 1), ("1.5\n", 1),
        ("1\n\u00b2\n", 2),
    ],
)
def test_categories_errors_name_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputFormatError) as caught:
        read_categories(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")


# ----------------------------------------------------------------------------- library errors


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("1\t1\t1\n1\t2\n", 2, "found 2"),
        ("1\t1\t1\n\n1\t2\t3\t4\n", 3, "found 4"),
        ("1\t1\t1\n2\t2\tabc\n", 2, "'abc'"),
        ("1\t1\t1\n2\tx\t1\n", 2, "'x'"),
        ("1\t1\t1\n2\t0\t1\n", 2, ">= 1"),
        ("1\t1\t1\n-2\t1\t1\n", 2, ">= 1"),
        ("1\t1\t1\n2\t1.5\t1\n", 2, "integers"),
        ("1\t1\t1\n2\t2\tnan\n", 2, "not finite"),
        ("1\t1\t1\n2\t2\t-inf\n", 2, "not finite"),
        ("1\t1\t1\n2\t2\t1\n\n1\t1\t5\n", 4, "duplicate entry for row 1, column 1"),
        ("1\t1\t1\n1 2 1\n", 2, "field"),
    ],
    ids=["two-fields", "four-fields", "value", "index", "zero", "negative", "fraction", "nan",
         "inf", "duplicate", "spaces"],
)
def test_input_errors_name_file_and_line(tmp_path: Path, text: str, line: int,
                                         words: str) -> None:
    path = tmp_path / "x.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputFormatError) as caught:
        read_input(path, neurons=8)
    assert caught.value.path == str(path)
    assert caught.value.line == line, str(caught.value)
    assert words in str(caught.value)


def test_input_wider_than_network(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("1\t1\t1\n2\t9\t1\n", encoding="utf-8")
    with pytest.raises(InputFormatError, match=r"x\.tsv:2: column 9 is out of range"):
        read_input(path, neurons=8)


# The warning is numpy's, reaching the user's terminal: see the CLI test's empty-* cases.
@pytest.mark.filterwarnings("ignore:loadtxt. input contained no data:UserWarning")
def test_empty_input_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputFormatError, match="empty"):
        read_input(path)


# ----------------------------------------------------------------------------- output files


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Outputs should be as readable as a plain open() would make them (umask applies)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("1\n", encoding="utf-8")
    written = tmp_path / "c.txt"
    write_categories(np.asarray([1]), written)
    assert os.stat(written).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
