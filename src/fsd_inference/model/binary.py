"""The compact binary model format: one file, all layers, bias and metadata.

A bundle is a NumPy ``.npz`` archive (zip with per-member CRC32, zlib-compressed):
a JSON ``meta`` member plus named arrays. Sparse matrices are stored as CSR triples
with the smallest index dtype that fits; a layer whose weights are all equal (every
Graph Challenge layer: 1/16) stores the value once. The same container carries the
per-worker shards of the communication plan, so one reader serves both.

Loading a generated 1024 x 120 network from its bundle takes a fraction of the
seconds its 120 TSV files do, and the file is what goes to S3.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError, ModelError
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import atomic_path
from fsd_inference.model.validate import check_csr, check_npz_members

FORMAT = "fsd-bundle"
VERSION = 1
SUFFIX = ".fsdm"


def index_dtype(limit: int) -> np.dtype[Any]:
    """The narrowest unsigned integer dtype holding values in [0, limit]."""
    for candidate in (np.uint8, np.uint16, np.uint32):
        if limit <= np.iinfo(candidate).max:
            return np.dtype(candidate)
    return np.dtype(np.uint64)


def pack_csr(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Arrays that describe ``matrix`` compactly, named under ``prefix``."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    arrays = {
        f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64),
        f"{prefix}.indptr": matrix.indptr.astype(index_dtype(matrix.nnz)),
        f"{prefix}.indices": matrix.indices.astype(index_dtype(max(matrix.shape[1] - 1, 0))),
    }
    data = matrix.data
    if data.size and np.all(data == data[0]):
        arrays[f"{prefix}.constant"] = data[:1].copy()
    else:
        arrays[f"{prefix}.data"] = data
    return arrays


def unpack_csr(prefix: str, arrays: dict[str, np.ndarray], dtype: str | None = None
               ) -> sp.csr_matrix:
    shape = tuple(int(v) for v in arrays[f"{prefix}.shape"])
    indptr = arrays[f"{prefix}.indptr"].astype(np.int32 if shape[1] < 2**31 else np.int64)
    indices = arrays[f"{prefix}.indices"].astype(indptr.dtype)
    if f"{prefix}.constant" in arrays:
        constant = arrays[f"{prefix}.constant"]
        data = np.full(indices.size, constant[0], dtype=constant.dtype)
    else:
        data = arrays[f"{prefix}.data"]
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape)
    matrix.has_sorted_indices = True
    return matrix


def write_bundle(path: Path | str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a bundle atomically (a failed write leaves no partial file)."""
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, **meta}
    encoded = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    with atomic_path(path) as temporary, temporary.open("wb") as out:
        np.savez_compressed(out, meta=encoded, **arrays)  # type: ignore[arg-type]


def read_bundle(path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a bundle; a missing, truncated or corrupt file raises InputFormatError."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "no such file")
    check_npz_members(path)  # sizes and headers, before numpy allocates anything
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError, OSError, EOFError,
            KeyError, AttributeError) as exc:
        raise InputFormatError(path, f"not a readable {FORMAT} file ({exc})") from exc
    try:
        meta = json.loads(arrays.pop("meta").tobytes())
    except (KeyError, ValueError) as exc:
        raise InputFormatError(path, f"not a {FORMAT} file: no metadata") from exc
    if not isinstance(meta, dict):
        raise InputFormatError(path, f"not a {FORMAT} file: its metadata is not an object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputFormatError(
            path, f"unsupported format {meta.get('format')!r} version {meta.get('version')!r}"
        )
    return meta, arrays


def save_network(network: Network, path: Path | str) -> None:
    arrays: dict[str, np.ndarray] = {}
    for k, layer in enumerate(network.layers, start=1):
        arrays.update(pack_csr(f"layer{k}", layer))
    meta = {"kind": "network", "neurons": network.neurons, "depth": network.depth,
            "bias": network.bias}
    write_bundle(path, meta, arrays)


def load_network(path: Path | str, dtype: str | None = None) -> Network:
    meta, arrays = read_bundle(path)
    if meta.get("kind") != "network":
        raise InputFormatError(path, f"holds a {meta.get('kind')!r}, not a network")
    try:
        depth, neurons, bias = int(meta["depth"]), int(meta["neurons"]), float(meta["bias"])
        if not 1 <= depth <= len(arrays) or not math.isfinite(bias):
            raise ValueError(f"depth {depth} or bias {bias} is impossible")
        for k in range(1, depth + 1):
            if check_csr(path, f"layer{k}", arrays) != (neurons, neurons):
                raise ValueError(f"layer {k} is not {neurons} x {neurons}")
        layers = tuple(unpack_csr(f"layer{k}", arrays, dtype) for k in range(1, depth + 1))
        return Network(neurons=neurons, layers=layers, bias=bias)
    except (KeyError, ValueError, TypeError, ModelError) as exc:
        raise InputFormatError(path, f"incomplete or inconsistent network bundle ({exc})") from exc
