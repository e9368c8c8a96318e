"""The network interface: a sparse DNN read one layer at a time.

Everything that walks a network (reference inference, partitioning, planning, writing
a bundle) only ever needs one or two layers at once, so it takes a
:class:`NetworkSource` and asks for layers in order. The in-memory
:class:`~fsd_inference.model.network.Network` is one implementation; a bundle opened
lazily (:mod:`~fsd_inference.model.binary`), a Graph Challenge folder read file by
file (:mod:`~fsd_inference.model.tsv`) and the generator are others, so a 65536 x 1920
network (4 billion edges, tens of GB in memory) is never held whole.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp


class NetworkSource(ABC):
    """``depth`` layers of ``neurons x neurons`` weights (CSR, sorted indices) and a bias.

    Layer ``k`` (1-based) is W_k, rows = input neurons, columns = output neurons, so one
    layer is ``Y @ W_k``. Implementations fill in :meth:`_layer`; the public
    :meth:`layer` checks the index and the shape once for all of them.
    """

    neurons: int  # plain attributes, so a frozen dataclass can implement them as fields
    bias: float

    @property
    @abstractmethod
    def depth(self) -> int: ...

    @abstractmethod
    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        """W_k in ``dtype`` (None: as stored), CSR with sorted indices."""

    def layer(self, k: int, dtype: str | None = None) -> sp.csr_matrix:
        if not 1 <= k <= self.depth:
            raise IndexError(f"layer {k} is outside 1..{self.depth}")
        return self._layer(k, dtype)

    def iter_layers(self, start: int = 1, stop: int | None = None, dtype: str | None = None
                    ) -> Iterator[sp.csr_matrix]:
        """W_start .. W_stop (inclusive, default the last), one at a time."""
        for k in range(start, (self.depth if stop is None else stop) + 1):
            yield self.layer(k, dtype)

    @property
    def edges(self) -> int:
        """Total stored weights over all layers (the Graph Challenge edge count)."""
        return int(sum(w.nnz for w in self.iter_layers()))

    def weights_digest(self) -> str:
        """A hash of every layer's structure and values (not the bias), layer by layer."""
        digest = WeightsDigest(self.neurons)
        for w in self.iter_layers():
            digest.update(w)
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """A content hash (structure, weights, bias): the key for cached plans and shards."""
        return fingerprint_of(self.weights_digest(), self.bias)

    def close(self) -> None:
        """Release what reading holds open (a bundle's file); reading again reopens it."""
        return None  # most sources hold nothing open

    def __enter__(self) -> NetworkSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fingerprint_of(weights_digest: str, bias: float) -> str:
    """The fingerprint from the weights' digest and the bias: a bundle stores the digest,
    so a bias override (``--bias``) does not mean rereading every layer."""
    return hashlib.sha256(f"{weights_digest}:{bias!r}".encode()).hexdigest()[:16]


class WeightsDigest:
    """The running hash behind :meth:`NetworkSource.weights_digest`: fed one layer at a
    time, by the sources that compute it and by the bundle writer that stores it.

    Each layer enters in a canonical form (CSR with sorted indices, int64 row pointers,
    int32 column ids, float64 values, or the value once when all are equal: 4 bytes an
    edge for a Graph Challenge layer), so a network hashes alike whatever dtype or
    format it was read from.
    """

    def __init__(self, neurons: int) -> None:
        self._hash = hashlib.sha256(f"fsd-weights:{neurons}".encode())
        self.layers = 0

    def update(self, weights: sp.csr_matrix) -> None:
        csr = sp.csr_matrix(weights, dtype=np.float64)
        if not csr.has_sorted_indices:
            csr = csr.copy()
            csr.sort_indices()
        self.layers += 1
        self._hash.update(f"|{self.layers}:{csr.nnz}|".encode())
        data = csr.data
        if data.size and data[0] == data[-1] and np.all(data == data[0]):
            data = data[:1]  # constant weights hash as their value once
            self._hash.update(b"constant")
        for array in (csr.indptr.astype(np.int64), csr.indices.astype(np.int32), data):
            self._hash.update(np.ascontiguousarray(array).data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
