"""The compact binary model format: one file, read and written one layer at a time.

A bundle is a zip archive of NumPy ``.npy`` members (the ``.npz`` layout: every member
CRC32-checked) with a JSON ``meta`` member. Sparse matrices are CSR triples with the
narrowest index type that fits (column ids of a 65536-neuron layer are uint16); a layer
whose weights are all equal (every Graph Challenge layer: 1/16) stores the value once,
and (version 2) a layer whose rows all hold the same number of weights stores that
count instead of its row pointers.

Why members and not one array: a member is found through the zip's central directory
and read alone, so :class:`BundleReader` hands out one layer (or any range of layers)
without reading the rest, and :class:`BundleWriter` appends layer after layer while
they are generated or converted. A 65536 x 1920 network (4 billion edges, 8 GB of
column ids) is never in memory whole. Members are deflated when that pays: large ones
only if a sample shrinks by a quarter (random column ids do not shrink at all, and
deflating gigabytes costs minutes), so weight layers are mostly stored as they are.

The same container carries the per-worker shards of the communication plan and the
activation slices, so one reader serves all three. Version 1 bundles (no row-degree
members, no stored digest) are still read.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError
from fsd_inference.model.base import NetworkSource, WeightsDigest, fingerprint_of
from fsd_inference.model.network import Network, materialise
from fsd_inference.model.tsv import atomic_path
from fsd_inference.model.validate import MAX_DIMENSION, check_csr, read_npz_member

FORMAT = "fsd-bundle"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SUFFIX = ".fsdm"
META = "meta"
# Members up to this size are always deflated; larger ones only if a sample of this size
# deflates to at most DEFLATE_WORTH of its bytes.
SAMPLE_BYTES = 1 << 16
DEFLATE_WORTH = 0.75
# Exceptions a damaged zip or npy member raises while being read.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError, OSError,
                EOFError, KeyError)


def index_dtype(limit: int) -> np.dtype[Any]:
    """The narrowest unsigned integer dtype holding values in [0, limit]."""
    for candidate in (np.uint8, np.uint16, np.uint32):
        if limit <= np.iinfo(candidate).max:
            return np.dtype(candidate)
    return np.dtype(np.uint64)


def pack_csr(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Arrays that describe ``matrix`` compactly, named under ``prefix``."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_sorted_indices:
        matrix = matrix.copy()
        matrix.sort_indices()
    arrays = {f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64)}
    degrees = np.diff(matrix.indptr)
    if degrees.size and degrees[0] > 0 and np.all(degrees == degrees[0]):
        arrays[f"{prefix}.degree"] = degrees[:1].astype(np.int64)  # regular rows: one count
    else:
        arrays[f"{prefix}.indptr"] = matrix.indptr.astype(index_dtype(matrix.nnz))
    arrays[f"{prefix}.indices"] = matrix.indices.astype(index_dtype(max(matrix.shape[1] - 1, 0)))
    data = matrix.data
    if data.size and np.all(data == data[0]):
        arrays[f"{prefix}.constant"] = data[:1].copy()
    else:
        arrays[f"{prefix}.data"] = data
    return arrays


def csr_members(prefix: str) -> tuple[str, ...]:
    """Every member name :func:`pack_csr` may write under ``prefix``."""
    return tuple(f"{prefix}.{part}" for part in
                 ("shape", "degree", "indptr", "indices", "constant", "data"))


def unpack_csr(prefix: str, arrays: dict[str, np.ndarray], dtype: str | None = None
               ) -> sp.csr_matrix:
    shape = tuple(int(v) for v in arrays[f"{prefix}.shape"])
    index = np.int32 if max(shape[1], arrays[f"{prefix}.indices"].size) < 2**31 else np.int64
    if f"{prefix}.degree" in arrays:
        degree = int(arrays[f"{prefix}.degree"][0])
        indptr = np.arange(shape[0] + 1, dtype=index) * degree
    else:
        indptr = arrays[f"{prefix}.indptr"].astype(index)
    indices = arrays[f"{prefix}.indices"].astype(index)
    if f"{prefix}.constant" in arrays:
        constant = arrays[f"{prefix}.constant"]
        data = np.full(indices.size, constant[0], dtype=dtype or constant.dtype)
    else:
        data = arrays[f"{prefix}.data"]
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape)
    matrix.has_sorted_indices = True
    return matrix


# ----------------------------------------------------------------------------- writing


def _deflates(payload: bytes) -> bool:
    if len(payload) <= SAMPLE_BYTES:
        return True
    sample = payload[-SAMPLE_BYTES:]  # the tail: past the .npy header
    return len(zlib.compress(sample, 1)) <= DEFLATE_WORTH * len(sample)


class BundleWriter:
    """Append arrays to a new bundle; the file appears (atomically) only when the
    ``with`` block ends without an error, so a failed write leaves nothing behind."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._cleanup = ExitStack()  # holds the temporary file until it replaces ``path``
        temporary = self._cleanup.enter_context(atomic_path(self.path))
        self._zip = zipfile.ZipFile(temporary, "w", allowZip64=True)
        self._meta: dict[str, Any] | None = None

    def __enter__(self) -> Self:
        return self

    def add(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
        payload = buffer.getvalue()
        method = zipfile.ZIP_DEFLATED if _deflates(payload) else zipfile.ZIP_STORED
        self._zip.writestr(f"{name}.npy", payload, compress_type=method)

    def add_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            self.add(name, array)

    def set_meta(self, meta: dict[str, Any]) -> None:
        """The header, written last (a zip's members are found by name, not order)."""
        self._meta = {"format": FORMAT, "version": VERSION, **meta}

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            try:
                if kind is None:
                    if self._meta is None:
                        raise AssertionError(f"{self.path}: bundle closed without its meta")
                    encoded = json.dumps(self._meta, sort_keys=True).encode()
                    self.add(META, np.frombuffer(encoded, dtype=np.uint8))
            finally:
                self._zip.close()
        except BaseException as failure:  # the temporary file goes, ``path`` is untouched
            self._cleanup.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._cleanup.__exit__(kind, error, trace)  # renamed into place only on success


def write_bundle(path: Path | str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a small bundle at once, atomically (a failed write leaves no partial file)."""
    with BundleWriter(path) as writer:
        writer.add_arrays(arrays)
        writer.set_meta(meta)


class NetworkWriter(BundleWriter):
    """A network bundle written one layer at a time (:meth:`add_layer`); the meta records
    the weights' digest and each layer's edge count, so readers need not scan the
    layers for either."""

    def __init__(self, path: Path | str, neurons: int, bias: float) -> None:
        super().__init__(path)
        self.neurons, self.bias = neurons, bias
        self._digest = WeightsDigest(neurons)
        self._edges: list[int] = []

    def add_layer(self, layer: sp.csr_matrix) -> None:
        self.add_arrays(pack_csr(f"layer{len(self._edges) + 1}", layer))
        self._digest.update(layer)
        self._edges.append(int(layer.nnz))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.set_meta({"kind": "network", "neurons": self.neurons, "depth": len(self._edges),
                       "bias": self.bias, "edges": self._edges,
                       "weights_digest": self._digest.hexdigest()})
        super().__exit__(kind, error, trace)


def save_network(network: NetworkSource, path: Path | str) -> None:
    """Write ``network`` as a bundle, reading (or generating) one layer at a time."""
    with NetworkWriter(path, network.neurons, network.bias) as writer:
        for layer in network.iter_layers():
            writer.add_layer(layer)


# ----------------------------------------------------------------------------- reading


class BundleReader(AbstractContextManager["BundleReader"]):
    """An open bundle: its meta at once, any member on demand.

    Every read problem (missing, truncated, corrupt, wrong format or version) is an
    InputFormatError naming the file and, for a member, the member.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFormatError(self.path, "no such file")
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.names = {name[:-4] for name in self._zip.namelist() if name.endswith(".npy")}
        except _READ_ERRORS as exc:
            raise InputFormatError(self.path, f"not a readable {FORMAT} file ({exc})") from exc
        try:
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise

    def _read_meta(self) -> dict[str, Any]:
        if META not in self.names:
            raise InputFormatError(self.path, f"not a {FORMAT} file: no metadata")
        try:
            meta = json.loads(self.array(META).tobytes())
        except ValueError as exc:
            raise InputFormatError(self.path, f"not a {FORMAT} file: no metadata") from exc
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT
                or meta.get("version") not in READABLE_VERSIONS):
            found = meta if not isinstance(meta, dict) else meta.get("format")
            version = meta.get("version") if isinstance(meta, dict) else None
            raise InputFormatError(self.path, f"unsupported format {found!r} version {version!r}")
        return meta

    def array(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise InputFormatError(self.path, f"member {name!r} is missing")
        # its declared sizes and .npy header checked before anything is allocated
        return read_npz_member(self.path, self._zip, self._zip.getinfo(f"{name}.npy"))

    def arrays(self, names: Iterator[str] | tuple[str, ...] | None = None
               ) -> dict[str, np.ndarray]:
        """The named members that exist (default: all but the meta)."""
        wanted = (self.names - {META}) if names is None else set(names) & self.names
        return {name: self.array(name) for name in sorted(wanted)}

    def csr(self, prefix: str, dtype: str | None = None) -> sp.csr_matrix:
        arrays = self.arrays(csr_members(prefix))
        check_csr(self.path, prefix, arrays)  # indices in range, pointers rising, finite
        try:
            return unpack_csr(prefix, arrays, dtype)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise InputFormatError(self.path, f"matrix {prefix!r} is incomplete or "
                                              f"inconsistent ({exc})") from exc

    def close(self) -> None:
        self._zip.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_bundle(path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a small bundle whole (shards, activation slices); InputFormatError if bad."""
    with BundleReader(path) as reader:
        return reader.meta, reader.arrays()


class BundleNetwork(NetworkSource):
    """A network bundle read lazily: each :meth:`layer` call reads that layer's members
    and nothing else, so memory holds one layer however deep the network is."""

    def __init__(self, path: Path | str, bias: float | None = None,
                 dtype: str | None = None) -> None:
        self.path = Path(path)
        self.dtype = dtype
        with BundleReader(self.path) as reader:
            meta = reader.meta
            names = reader.names
        if meta.get("kind") != "network":
            raise InputFormatError(self.path, f"holds a {meta.get('kind')!r}, not a network")
        try:
            self.neurons = int(meta["neurons"])
            self._depth = int(meta["depth"])
            self.stored_bias = float(meta["bias"])
            edges = meta.get("edges")
            self._edges = None if edges is None else [int(e) for e in edges]
            self._digest = meta.get("weights_digest")
        except (KeyError, ValueError, TypeError) as exc:
            raise InputFormatError(self.path, f"incomplete network metadata ({exc})") from exc
        self.bias = self.stored_bias if bias is None else float(bias)
        if not (math.isfinite(self.bias) and 0 < self.neurons <= MAX_DIMENSION):
            raise InputFormatError(self.path, f"impossible network: {self.neurons} neurons, "
                                              f"bias {self.bias}")
        if not 1 <= self._depth <= len(names):  # every layer has members: bounds the scan
            raise InputFormatError(self.path, f"impossible network: depth {self._depth} "
                                              f"with {len(names)} members")
        missing = [k for k in range(1, self._depth + 1) if f"layer{k}.shape" not in names]
        if self._depth < 1 or missing:
            raise InputFormatError(self.path, f"incomplete network bundle: depth "
                                              f"{self._depth}, missing layers {missing[:5]}")
        self._reader: BundleReader | None = None

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def edges(self) -> int:
        return sum(self._edges) if self._edges is not None else super().edges

    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        if self._reader is None:  # opened on first use, kept for the next layers
            self._reader = BundleReader(self.path)
        matrix = self._reader.csr(f"layer{k}", dtype or self.dtype)
        if matrix.shape != (self.neurons, self.neurons):
            raise InputFormatError(self.path, f"layer {k} is {matrix.shape[0]} x "
                                              f"{matrix.shape[1]}, expected {self.neurons} x "
                                              f"{self.neurons}")
        return matrix

    def weights_digest(self) -> str:
        return str(self._digest) if self._digest else super().weights_digest()

    def fingerprint(self) -> str:
        return fingerprint_of(self.weights_digest(), self.bias)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __getstate__(self) -> dict[str, Any]:  # picklable: the open zip is not sent along
        return {**self.__dict__, "_reader": None}


def load_network(path: Path | str, dtype: str | None = None) -> Network:
    """Every layer of a network bundle in memory (small networks; see BundleNetwork)."""
    with BundleNetwork(path, dtype=dtype) as source:
        return materialise(source)
