"""The in-memory sparse DNN: L weight matrices of N x N and one bias."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import DEFAULT_BIAS_BY_NEURONS, DTYPES
from fsd_inference.exceptions import ConfigError, ModelError
from fsd_inference.model.base import NetworkSource


@dataclass(frozen=True)
class Network(NetworkSource):
    """A Graph Challenge network held whole in memory (small networks, tests).

    ``layers[k]`` is W_{k+1} as CSR with rows = input neurons and columns = output
    neurons, so one layer is ``Y @ W`` (the orientation of the published files,
    ``row<TAB>col<TAB>value`` with row the source neuron). Large networks are read
    layer by layer through :class:`~fsd_inference.model.base.NetworkSource` instead.
    """

    neurons: int
    layers: tuple[sp.csr_matrix, ...]
    bias: float

    def __post_init__(self) -> None:
        if not self.layers:
            raise ModelError("a network needs at least one layer")
        for k, w in enumerate(self.layers, start=1):
            if w.shape != (self.neurons, self.neurons):
                raise ModelError(
                    f"layer {k} is {w.shape[0]} x {w.shape[1]}, expected "
                    f"{self.neurons} x {self.neurons}"
                )

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def edges(self) -> int:
        return int(sum(w.nnz for w in self.layers))

    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        w = self.layers[k - 1]
        if dtype is None or w.dtype == resolve_dtype(dtype):
            return w
        return w.astype(dtype)

    def astype(self, dtype: str) -> Network:
        """The same network with weights in ``dtype`` (a no-op when it already is)."""
        target = resolve_dtype(dtype)
        if all(w.dtype == target for w in self.layers):
            return self
        return Network(self.neurons, tuple(w.astype(target) for w in self.layers), self.bias)


def materialise(source: NetworkSource, dtype: str | None = None) -> Network:
    """Every layer of ``source`` in memory (for small networks and tests)."""
    if isinstance(source, Network) and dtype is None:
        return source
    return Network(source.neurons, tuple(source.iter_layers(dtype=dtype)), source.bias)


def resolve_dtype(dtype: str) -> np.dtype[np.floating]:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def resolve_bias(neurons: int, override: float | None) -> float:
    """The bias for a network of ``neurons``: the override, else the Graph Challenge value."""
    if override is not None:
        if not np.isfinite(override):
            raise ConfigError(f"--bias must be a finite number, got {override}")
        return float(override)
    try:
        return DEFAULT_BIAS_BY_NEURONS[neurons]
    except KeyError:
        known = ", ".join(f"{n}: {b}" for n, b in DEFAULT_BIAS_BY_NEURONS.items())
        raise ConfigError(
            f"no default bias for {neurons} neurons (defaults exist for {known}); pass --bias"
        ) from None
