"""Activation bundles: a worker's columns of Y_l between invocations.

Input slices (Y_0) and block checkpoints share one format, the project's ``.fsdm``
bundle: ``y`` (batch x owned columns, CSR) plus ``columns``, the global neuron ids of
those columns, so gather can place every worker's part without reloading the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError
from fsd_inference.model.binary import pack_csr, read_bundle, unpack_csr, write_bundle
from fsd_inference.model.validate import MAX_DIMENSION, check_csr, check_index_vector

__all__ = ["read_activations", "write_activations"]


def write_activations(path: Path, y: sp.csr_matrix, columns: np.ndarray,
                      meta: dict[str, Any]) -> Path:
    arrays = pack_csr("y", sp.csr_matrix(y))
    arrays["columns"] = np.asarray(columns, dtype=np.int64)
    write_bundle(path, {"kind": "activations", **meta}, arrays)
    return path


def read_activations(path: Path, dtype: str) -> tuple[dict[str, Any], np.ndarray, sp.csr_matrix]:
    """``(meta, columns, y)``; y in ``dtype`` with sorted indices."""
    meta, arrays = read_bundle(path)
    if meta.get("kind") != "activations" or "columns" not in arrays:
        raise InputFormatError(path, f"holds a {meta.get('kind')!r}, not activations")
    check_csr(path, "y", arrays)
    y = unpack_csr("y", arrays, dtype)
    columns = check_index_vector(path, "columns", arrays["columns"], MAX_DIMENSION)
    if y.shape[1] != columns.size:
        raise InputFormatError(path, f"{y.shape[1]} columns of values but "
                                     f"{columns.size} column ids")
    return meta, columns, y
