"""Checks for decoded model and activation arrays, shared by every reader.

The readers (model/binary.py for bundles, shards and activations) hand the arrays they
decoded to these functions, which raise InputFormatError naming the file and the
member: so a damaged or forged ``.fsdm`` file is one clear error, never a raw
TypeError / IndexError from scipy, and never a model that silently computes garbage
(out-of-range column indices, decreasing index pointers, NaN or infinite weights).

Sizes are checked before anything is allocated: :func:`check_npz_members` reads only
the zip directory and each member's ``.npy`` header.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fsd_inference.exceptions import InputFormatError

MAX_DIMENSION = 2**31 - 1  # rows or columns of a stored matrix
# Deflate cannot compress better than about 1032:1, so a member that declares more is
# forged; the allowance covers tiny members whose headers dominate.
DEFLATE_MAX_RATIO = 1032
SMALL_MEMBER_BYTES = 1 << 16
FLOAT_KINDS = ("f",)
MAX_HEADER_BYTES = 10_000  # numpy refuses longer .npy headers by default, too
_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4}  # the header length field's width per version
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def check_npz_members(path: Path) -> None:
    """Every member of the bundle passes :func:`check_npz_member`."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                check_npz_member(path, archive, info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError,
            EOFError, NotImplementedError, KeyError) as exc:
        raise InputFormatError(path, f"not a readable fsd-bundle file ({exc})") from exc


def check_npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The member's declared size is possible for its compressed size, and its ``.npy``
    header describes exactly that many bytes (numpy allocates from the header)."""
    try:
        with archive.open(_bounded(path, info)) as member:
            _checked_header(path, info, member)
    except _ZIP_ERRORS as exc:
        raise InputFormatError(path, f"not a readable fsd-bundle file ({exc})") from exc


def read_npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo
                    ) -> np.ndarray:
    """The member's array, checked as :func:`check_npz_member` checks it, in one pass.

    A worker's shard holds thousands of small members (about 3,500 at 1024 x 120 on 8
    workers); checking, then reading with numpy's ``read_array``, opened each member
    twice and parsed its header twice (``ast.literal_eval``): most of the 0.4 s every
    warm worker spent loading its shard at the start of each block.
    """
    unreadable = "not a readable fsd-bundle file"
    try:
        member = archive.open(_bounded(path, info))
    except _ZIP_ERRORS as exc:
        raise InputFormatError(path, f"{unreadable} ({exc})") from exc
    with member:
        try:
            shape, fortran, dtype = _checked_header(path, info, member)
        except _ZIP_ERRORS as exc:
            raise InputFormatError(path, f"{unreadable} ({exc})") from exc
        try:
            data = bytearray(member.read())  # writable, as numpy's read_array returns
        except _ZIP_ERRORS as exc:
            raise InputFormatError(path, f"member {info.filename[:-4]!r} is unreadable "
                                         f"({exc})") from exc
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError,
               EOFError, NotImplementedError, KeyError)


def _bounded(path: Path, info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """``info``, unless it declares more bytes than its compressed size can hold."""
    bound = info.compress_size * DEFLATE_MAX_RATIO + SMALL_MEMBER_BYTES
    if info.file_size > bound:
        raise InputFormatError(path, f"member {info.filename} declares "
                                     f"{info.file_size:,} bytes from "
                                     f"{info.compress_size:,} compressed: forged")
    return info


def _checked_header(path: Path, info: zipfile.ZipInfo, member: Any
                    ) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran order, dtype) from an open member positioned at its start, after
    checking that the header describes exactly the bytes the member holds."""
    version = np.lib.format.read_magic(member)
    width = _LENGTH_BYTES.get(version)
    if width is None:
        raise ValueError(f"member {info.filename}: .npy version {version}")
    prefix = member.read(width)
    length = int.from_bytes(prefix, "little")
    if len(prefix) != width or length > MAX_HEADER_BYTES:
        raise ValueError(f"member {info.filename}: a .npy header of {length:,} bytes")
    shape, fortran, dtype = _parse_header(version, prefix + member.read(length))
    header_end = member.tell()
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if dtype.hasobject or need + header_end != info.file_size:
        raise InputFormatError(path, f"member {info.filename}: its header "
                                     f"describes {need:,} bytes of {dtype}, the "
                                     f"member holds {info.file_size - header_end:,}")
    return shape, fortran, dtype


@functools.lru_cache(maxsize=4096)
def _parse_header(version: tuple[int, int], raw: bytes
                  ) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """numpy's own header parser (``ast.literal_eval`` of a dict), once per distinct
    header: a shard's 3,500 members have about 50 (most are short index vectors)."""
    parsed: tuple[tuple[int, ...], bool, np.dtype[Any]] = _HEADER_READERS[version](
        io.BytesIO(raw))
    return parsed


def check_csr(path: Path | str, prefix: str, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """The stored CSR triple under ``prefix`` is well formed; returns its shape."""

    def fail(message: str) -> InputFormatError:
        return InputFormatError(path, f"{prefix}: {message}")

    try:
        shape_array = arrays[f"{prefix}.shape"]
        indices = arrays[f"{prefix}.indices"]
        # format v2: rows of one degree store it once instead of their pointers
        degree = arrays.get(f"{prefix}.degree")
        indptr = arrays[f"{prefix}.indptr"] if degree is None else None
    except KeyError as exc:
        raise fail(f"member {exc} is missing") from None
    if degree is not None:
        if degree.ndim != 1 or degree.size != 1 or degree.dtype.kind not in "iu" \
                or int(degree[0]) < 0:
            raise fail("degree must be one non-negative integer")
        if shape_array.ndim != 1 or shape_array.size != 2:
            raise fail("shape must be two sizes")
        indptr = np.arange(int(shape_array[0]) + 1, dtype=np.int64) * int(degree[0])
    assert indptr is not None
    for name, array in (("shape", shape_array), ("indptr", indptr), ("indices", indices)):
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise fail(f"{name} must be a vector of integers, not {array.dtype} {array.shape}")
    if shape_array.size != 2 or (shape_array < 0).any() or (shape_array > MAX_DIMENSION).any():
        raise fail(f"shape {shape_array.tolist()} is not two sizes within 0..{MAX_DIMENSION}")
    rows, columns = (int(v) for v in shape_array)
    if indptr.size != rows + 1 or (indptr.size and int(indptr[0]) != 0):
        raise fail(f"indptr has {indptr.size} entries for {rows} rows (or does not start at 0)")
    if (np.diff(indptr.astype(np.int64)) < 0).any():
        raise fail("indptr decreases")
    if int(indptr[-1]) != indices.size:
        raise fail(f"indptr ends at {int(indptr[-1])}, but there are {indices.size} indices")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= columns):
        raise fail(f"column index {int(indices.max())} is outside 0..{columns - 1}")
    values = arrays.get(f"{prefix}.data", arrays.get(f"{prefix}.constant"))
    if values is None:
        raise fail("has neither data nor constant")
    expected = indices.size if f"{prefix}.data" in arrays else min(1, indices.size)
    if values.ndim != 1 or values.size < expected or (f"{prefix}.data" in arrays
                                                      and values.size != indices.size):
        raise fail(f"{values.size} values for {indices.size} indices")
    check_values(path, prefix, values)
    return rows, columns


def check_values(path: Path | str, name: str, values: np.ndarray) -> None:
    """Weights, biases and activations are finite floating-point numbers."""
    if values.dtype.kind not in FLOAT_KINDS:
        raise InputFormatError(path, f"{name}: values must be floating point, not "
                                     f"{values.dtype}")
    if not np.isfinite(values).all():
        raise InputFormatError(path, f"{name}: values are not all finite (NaN or infinity)")


def check_index_vector(path: Path | str, name: str, array: Any, limit: int) -> np.ndarray:
    """An integer vector with every entry in ``0..limit-1`` (neuron ids, positions)."""
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
        raise InputFormatError(path, f"{name} must be a vector of integers")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= limit):
        raise InputFormatError(path, f"{name}: index {int(array.max())} outside "
                                     f"0..{limit - 1}")
    return array
