"""Open a model from either format: a Graph Challenge folder or a binary bundle."""

from __future__ import annotations

from pathlib import Path

import scipy.sparse as sp

from fsd_inference.model.base import NetworkSource
from fsd_inference.model.binary import BundleNetwork
from fsd_inference.model.network import Network, materialise, resolve_bias
from fsd_inference.model.tsv import layer_files, read_layer


class FolderNetwork(NetworkSource):
    """A Graph Challenge folder read one ``n{N}-l{k}.tsv`` file per :meth:`layer` call."""

    def __init__(self, directory: Path | str, bias: float | None = None,
                 dtype: str | None = None) -> None:
        self.neurons, self.files = layer_files(directory)
        self.bias = resolve_bias(self.neurons, bias)
        self.dtype = dtype or "float64"

    @property
    def depth(self) -> int:
        return len(self.files)

    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        return read_layer(self.files[k - 1], self.neurons, dtype or self.dtype)


def open_model(path: Path | str, bias: float | None = None, dtype: str | None = None
               ) -> NetworkSource:
    """The model at ``path``, read lazily, layer by layer: a folder of ``n{N}-l{k}.tsv``
    files or a ``.fsdm`` bundle. ``bias`` overrides the stored or by-N bias."""
    path = Path(path)
    if path.is_dir():
        return FolderNetwork(path, bias=bias, dtype=dtype)
    network = BundleNetwork(path, dtype=dtype)
    if bias is not None:
        network.bias = resolve_bias(network.neurons, bias)
    return network


def load_model(path: Path | str, bias: float | None = None, dtype: str | None = None) -> Network:
    """Every layer of the model in memory (small networks; large ones: open_model)."""
    with open_model(path, bias, dtype) as source:
        return materialise(source)
