"""The public Sparse DNN Graph Challenge text layout.

- network: a folder of per-layer files ``n{N}-l{k}.tsv`` (k = 1..L),
- input: one TSV of ``row<TAB>col<TAB>value`` (optionally gzipped),
- categories: one 1-based row id per line, ascending.

All indices in the files are 1-based; in memory they are 0-based. Parsing is
vectorised (numpy's C reader); only when that fails do we walk the lines in Python
to name the first bad one, so the happy path costs about a second per million lines.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError, ModelError
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.network import Network, resolve_bias

MAX_INDEX = 2**31 - 1  # row / column ids beyond this are not a plausible network
# Samples in one input batch: its row pointer is allocated from the largest row id, so a
# one-line file naming row 2,147,483,647 must be refused, not allocated (16 GiB).
MAX_BATCH_ROWS = 1 << 24
# What a damaged or mislabelled file raises while it is read as text.
UNREADABLE = (UnicodeDecodeError, EOFError, OSError, zlib.error)
LAYER_FILE = re.compile(r"^n(\d+)-l(\d+)\.tsv(\.gz)?$")


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _is_count(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts superscripts that int() rejects)."""
    return text.isascii() and text.isdigit()


def _first_bad_line(path: Path) -> tuple[int, str]:
    """Walk the file to find the first line that is not ``int<TAB>int<TAB>number``."""
    with _open_text(path) as text:
        for number, line in enumerate(text, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 3:
                return number, f"expected 3 tab-separated fields, found {len(fields)}: {stripped!r}"
            for name, field in zip(("row", "column"), fields[:2], strict=True):
                if not _is_count(field):
                    return number, f"{name} {field!r} is not a positive integer"
            try:
                float(fields[2])
            except ValueError:
                return number, f"value {fields[2]!r} is not a number"
    return 0, "unreadable content"


def _line_of_entry(path: Path, index: int) -> int:
    """The 1-based file line holding the ``index``-th (0-based) non-blank line."""
    seen = -1
    with _open_text(path) as text:
        for number, line in enumerate(text, start=1):
            if line.strip():
                seen += 1
                if seen == index:
                    return number
    return index + 1


def read_triples(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a ``row<TAB>col<TAB>value`` file into 0-based rows, cols and float64 values.

    Raises InputFormatError naming the file and line for anything malformed: wrong
    field count, non-integer or non-positive indices, NaN or infinite values,
    duplicate entries, an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "no such file")
    try:
        # numpy's reader opens a plain file itself: 30% faster than through a handle
        source = _open_text(path) if path.suffix == ".gz" else nullcontext(path)
        with source as text, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": ours below
            table = np.loadtxt(text, delimiter="\t", dtype=np.float64, ndmin=2, comments=None,
                               encoding="utf-8")
    except (ValueError, *UNREADABLE) as exc:
        if isinstance(exc, UNREADABLE):
            raise InputFormatError(path, f"cannot be read as text: {exc}") from exc
        line, message = _first_bad_line(path)
        raise InputFormatError(path, message, line or None) from exc
    if table.size == 0:
        raise InputFormatError(path, "is empty: expected row<TAB>col<TAB>value lines")
    if table.shape[1] != 3:
        line, message = _first_bad_line(path)
        raise InputFormatError(path, message, line or None)

    # whole-array checks first (the common, valid case); the row-wise search for the
    # first bad entry only when one fails
    index_part = table[:, :2]
    with np.errstate(invalid="ignore"):  # NaN and out-of-range values fail below
        counts = index_part.astype(np.int64)
    if not (((index_part >= 1) & (index_part <= MAX_INDEX)).all()
            and (counts == index_part).all()):
        bad = ~((index_part >= 1) & (index_part <= MAX_INDEX)).all(axis=1)
        bad |= (index_part != np.floor(index_part)).any(axis=1)
        i = int(np.argmax(bad))
        raise InputFormatError(
            path,
            f"row and column must be integers >= 1 (at most {MAX_INDEX}), found "
            f"{table[i, 0]:g} and {table[i, 1]:g}",
            _line_of_entry(path, i),
        )
    values = table[:, 2]
    if not np.isfinite(values).all():
        i = int(np.argmax(~np.isfinite(values)))
        raise InputFormatError(path, f"value {values[i]} is not finite", _line_of_entry(path, i))

    rows = counts[:, 0] - 1
    cols = counts[:, 1] - 1
    _reject_duplicates(path, rows, cols)
    return rows, cols, values


def _reject_duplicates(path: Path, rows: np.ndarray, cols: np.ndarray) -> None:
    width = int(cols.max()) + 1
    keys = rows * width + cols
    if keys.size < 2 or (keys[1:] > keys[:-1]).all():  # sorted files: one pass, no sort
        return
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if dup.size:
        i = int(order[dup[0] + 1])
        raise InputFormatError(
            path,
            f"duplicate entry for row {rows[i] + 1}, column {cols[i] + 1}",
            _line_of_entry(path, i),
        )


def _check_bounds(path: Path, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                  what: str) -> None:
    for name, idx, limit in (("row", rows, n_rows), ("column", cols, n_cols)):
        over = idx >= limit
        if over.any():
            i = int(np.argmax(over))
            raise InputFormatError(
                path,
                f"{name} {idx[i] + 1} is out of range: {what} has {limit} {name}s",
                _line_of_entry(path, i),
            )


def layer_files(directory: Path | str) -> tuple[int, list[Path]]:
    """Find ``n{N}-l{k}.tsv`` files; return N and the files ordered by k.

    Raises ModelError for an empty folder, mixed N, or a gap in k = 1..L.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such network folder")
    found: dict[int, dict[int, Path]] = {}
    for entry in directory.iterdir():
        match = LAYER_FILE.match(entry.name)
        if match:
            found.setdefault(int(match.group(1)), {})[int(match.group(2))] = entry
    if not found:
        raise ModelError(f"{directory}: no layer files named n<N>-l<k>.tsv")
    if len(found) > 1:
        sizes = ", ".join(str(n) for n in sorted(found))
        raise ModelError(f"{directory}: layer files for different neuron counts ({sizes})")
    (neurons, by_layer), = found.items()
    depth = max(by_layer)
    missing = [k for k in range(1, depth + 1) if k not in by_layer]
    if missing:
        shown = ", ".join(str(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ModelError(
            f"{directory}: layers 1..{depth} expected, missing layer file(s) {shown} "
            f"(n{neurons}-l<k>.tsv)"
        )
    return neurons, [by_layer[k] for k in range(1, depth + 1)]


def read_layer(path: Path, neurons: int, dtype: str = "float64") -> sp.csr_matrix:
    rows, cols, values = read_triples(path)
    _check_bounds(path, rows, cols, neurons, neurons, f"a {neurons}-neuron layer")
    matrix = sp.csr_matrix((values.astype(dtype), (rows, cols)), shape=(neurons, neurons))
    matrix.sort_indices()
    return matrix


def read_network_dir(
    directory: Path | str, bias: float | None = None, dtype: str = "float64"
) -> Network:
    """Read a Graph Challenge network folder; the bias defaults by N (see resolve_bias)."""
    neurons, files = layer_files(directory)
    resolved = resolve_bias(neurons, bias)
    layers = tuple(read_layer(path, neurons, dtype) for path in files)
    return Network(neurons=neurons, layers=layers, bias=resolved)


def read_input(path: Path | str, neurons: int | None = None, dtype: str = "float64"
               ) -> sp.csr_matrix:
    """Read an input batch: rows are samples (as many as the largest row id)."""
    path = Path(path)
    rows, cols, values = read_triples(path)
    if int(rows.max()) >= MAX_BATCH_ROWS:
        i = int(np.argmax(rows))
        raise InputFormatError(path, f"row {rows[i] + 1} is beyond the {MAX_BATCH_ROWS:,} "
                                     f"samples an input batch may hold", _line_of_entry(path, i))
    width = int(cols.max()) + 1
    if neurons is not None:
        if width > neurons:
            _check_bounds(path, rows, cols, int(rows.max()) + 1, neurons,
                          f"the network ({neurons} neurons)")
        width = neurons
    matrix = sp.csr_matrix((values.astype(dtype), (rows, cols)), shape=(int(rows.max()) + 1, width))
    matrix.sort_indices()
    return matrix


def read_categories(path: Path | str) -> np.ndarray:
    """Read a categories file: 1-based row ids, one per line, strictly ascending.

    An empty file is valid (no row was categorised).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "no such file")
    ids: list[int] = []
    try:
        with _open_text(path) as text:
            for number, line in enumerate(text, start=1):
                _category(path, line, number, ids)
    except UNREADABLE as exc:
        raise InputFormatError(path, f"cannot be read as a categories file: {exc}") from exc
    return np.asarray(ids, dtype=np.int64)


def _category(path: Path, line: str, number: int, ids: list[int]) -> None:
    """Append the row id on ``line`` (if any) to ``ids``, checking it."""
    field = line.strip()
    if not field:
        return
    # at most 10 digits before int(): a 23-digit id must not overflow int64 later
    if not _is_count(field) or len(field) > 10 or not 1 <= int(field) <= MAX_INDEX:
        raise InputFormatError(path, f"expected a row id from 1 to {MAX_INDEX}, found "
                                     f"{field[:40]!r}", number)
    value = int(field)
    if ids and value <= ids[-1]:
        raise InputFormatError(
            path, f"row ids must be strictly ascending, {value} follows {ids[-1]}", number
        )
    ids.append(value)


# ----------------------------------------------------------------------------- writing


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only on success.

    So an interrupted or failed write never leaves a half-written file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _format_triples(rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> str:
    """``row<TAB>col<TAB>value`` lines, 1-based. Each distinct value is formatted once
    with ``repr`` (the shortest text that round-trips exactly: 0.0625, 1.0, 0.1); weights
    and inputs have few distinct values, which makes this ~5x faster than np.savetxt."""
    unique, inverse = np.unique(values.astype(np.float64), return_inverse=True)
    text = [repr(float(u)) for u in unique]
    return "".join(
        f"{r}\t{c}\t{text[i]}\n"
        for r, c, i in zip((rows + 1).tolist(), (cols + 1).tolist(),
                           np.asarray(inverse).ravel().tolist(), strict=True)
    )


def _write_triples(path: Path, matrix: sp.spmatrix) -> None:
    coo = sp.coo_matrix(matrix)
    order = np.lexsort((coo.col, coo.row))
    rows, cols, values = coo.row[order], coo.col[order], coo.data[order]
    with atomic_path(path) as temporary:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(temporary, "wt", encoding="utf-8") as out:
            step = 1 << 20
            for start in range(0, rows.size, step):
                window = slice(start, start + step)
                out.write(_format_triples(rows[window], cols[window], values[window]))


def write_layer_file(directory: Path | str, neurons: int, k: int, layer: sp.spmatrix) -> Path:
    """Write ``n{N}-l{k}.tsv`` (atomically) into ``directory``, created if needed."""
    path = Path(directory) / f"n{neurons}-l{k}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_triples(path, layer)
    return path


def write_network_dir(network: NetworkSource, directory: Path | str) -> list[Path]:
    """Write ``n{N}-l{k}.tsv`` for every layer, one layer in memory at a time."""
    return [write_layer_file(directory, network.neurons, k, layer)
            for k, layer in enumerate(network.iter_layers(), start=1)]


def write_input(matrix: sp.spmatrix, path: Path | str) -> None:
    _write_triples(Path(path), matrix)


def write_categories(categories: np.ndarray, path: Path | str) -> None:
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text("".join(f"{int(c)}\n" for c in categories), encoding="utf-8")
