"""Open a model from either format: a Graph Challenge folder or a binary bundle."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fsd_inference.model.binary import load_network
from fsd_inference.model.network import Network, resolve_bias
from fsd_inference.model.tsv import read_network_dir


def load_model(path: Path | str, bias: float | None = None, dtype: str | None = None) -> Network:
    """A folder is read as ``n{N}-l{k}.tsv`` files, a file as a ``.fsdm`` bundle.

    ``bias`` overrides the bias stored in a bundle or defaulted by N for a folder.
    """
    path = Path(path)
    if path.is_dir():
        return read_network_dir(path, bias=bias, dtype=dtype or "float64")
    network = load_network(path, dtype)
    return network if bias is None else replace(network, bias=resolve_bias(network.neurons, bias))
