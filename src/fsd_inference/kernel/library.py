"""Loading the compiled kernel (``libfsdkernel.so``, built from fused.c) through ctypes.

The library is plain C with no Python headers: ``pip install`` builds it for the host
(setup.py), src/Makefile cross-compiles it for the Lambda functions' architecture, and
either way it sits beside this file. ctypes releases the GIL for the duration of each
call, which is what lets Python threads run row blocks in parallel.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import ENV_KERNEL_LIBRARY
from fsd_inference.kernel.base import KernelError

LIBRARY_NAME = "libfsdkernel.so"
OK, NO_MEMORY, BAD_COLUMN, BAD_POSITION = 0, 1, 2, 4

SYMBOLS = ("fsd_layer_f32", "fsd_layer_f64", "fsd_nnz", "fsd_scaled_rows", "fsd_twin_rows",
           "fsd_bad_at", "fsd_collect", "fsd_free", "fsd_detach", "fsd_release",
           "fsd_twin_classes", "fsd_extract_nnz", "fsd_extract_collect")
_i64 = ctypes.c_int64
_p = ctypes.c_void_p


class PieceStruct(ctypes.Structure):
    _fields_ = [("rows", _p), ("n_rows", _i64), ("width", _i64), ("colptr", _p),
                ("colpos", _p), ("ordered", _i64), ("indptr", _p), ("indices", _p),
                ("data", _p)]


class WeightsStruct(ctypes.Structure):
    _fields_ = [("n_in", _i64), ("n_out", _i64), ("indptr", _p), ("indices", _p),
                ("data", _p), ("scale", ctypes.c_double), ("n_rep", _i64),
                ("rep_indptr", _p), ("rep_indices", _p), ("rep_data", _p), ("class_of", _p)]


@dataclass(frozen=True)
class CsrArrays:
    """A CSR matrix's arrays as the C code reads them (int64 row pointers, int32
    columns, contiguous values), checked once."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> CsrArrays:
        n_in, n_out = matrix.shape
        indptr = np.ascontiguousarray(matrix.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(matrix.indices, dtype=np.int32)
        if (indptr.size != n_in + 1 or indptr[0] != 0 or indptr[-1] != indices.size
                or np.any(np.diff(indptr) < 0)):
            raise KernelError(f"malformed {n_in} x {n_out} weights: inconsistent row pointers")
        if indices.size and (indices.min() < 0 or indices.max() >= n_out):
            raise KernelError(f"malformed {n_in} x {n_out} weights: a column outside "
                              f"0..{n_out - 1}")
        return cls(indptr, indices, np.ascontiguousarray(matrix.data))


def library_path() -> Path:
    """$FSD_KERNEL_LIBRARY, else the library beside this module."""
    override = os.environ.get(ENV_KERNEL_LIBRARY)
    return Path(override) if override else Path(__file__).with_name(LIBRARY_NAME)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The library with its signatures declared, or None when it is missing or unloadable
    (not built on this machine, built for another architecture)."""
    path = library_path()
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    if any(not hasattr(lib, name) for name in SYMBOLS):
        return None  # built from an older fused.c
    for name in ("fsd_layer_f32", "fsd_layer_f64"):
        function = getattr(lib, name)
        function.argtypes = [ctypes.POINTER(PieceStruct), ctypes.c_int32,
                             ctypes.POINTER(WeightsStruct), ctypes.c_double, ctypes.c_double,
                             _i64, _i64, _i64, _p, _i64, ctypes.POINTER(_p)]
        function.restype = ctypes.c_int
    for name in ("fsd_nnz", "fsd_scaled_rows", "fsd_twin_rows", "fsd_bad_at",
                 "fsd_extract_nnz"):
        getattr(lib, name).argtypes = [_p]
        getattr(lib, name).restype = _i64
    lib.fsd_collect.argtypes = [_p, _i64, _p, _p, _p, _i64]
    lib.fsd_collect.restype = None
    lib.fsd_extract_collect.argtypes = [_p, _p, _p, _p, _i64]
    lib.fsd_extract_collect.restype = None
    lib.fsd_free.argtypes = [_p]
    lib.fsd_free.restype = None
    lib.fsd_detach.argtypes = [_p, ctypes.POINTER(_p), ctypes.POINTER(_p), _i64]
    lib.fsd_detach.restype = None
    lib.fsd_release.argtypes = [_p]
    lib.fsd_release.restype = None
    lib.fsd_twin_classes.argtypes = [_i64, _i64, _p, _p, _p, _i64, ctypes.c_uint64, _p, _p]
    lib.fsd_twin_classes.restype = _i64
    return lib


def load_error() -> str:
    """Why :func:`load` returned None, for a one-line message."""
    path = library_path()
    if not path.is_file():
        return f"{path} is not built (pip install builds it; it needs a C compiler)"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return f"{path} does not load: {exc}"
    missing = [name for name in SYMBOLS if not hasattr(lib, name)]
    if missing:
        return (f"{path} lacks {', '.join(missing)}: built from an older fused.c "
                f"(reinstall: pip install -e . or make)")
    return f"{path} loads"
