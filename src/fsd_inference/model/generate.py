"""A RadiX-Net style generator for Graph Challenge-like sparse DNNs.

Topology (Kepner & Robinett, "RadiX-Net", 2019, in the form the Graph Challenge uses):
a radix-``r`` mixing topology over ``M = N / B`` super-nodes, expanded by a Kronecker
product with dense ``B x B`` blocks, so every neuron has exactly ``r * B`` = 32 in-edges
and 32 out-edges in every layer, each of weight 1/16.

Super-node ``m`` of layer ``l`` feeds super-nodes ``(m + t * s_l) mod M`` for
``t = 0..r-1``, with strides ``s_l`` cycling through ``r^0, r^1, ..., r^(D-1)``
(``D = floor(log_r M)``). When ``M`` is a power of ``r`` this is a radix-r butterfly:
after D layers every output depends on every input through exactly one path. For other
``M`` the same strides still give exact regularity (``r * s <= M`` keeps the r targets
distinct), so any ``N`` divisible by ``B`` with ``N / B >= r`` works.

Relabelling: the neurons between layer l and l+1 are renamed by one seeded random
permutation, applied to the columns of W_l and the rows of W_{l+1} alike, so the
network computes the same function up to relabelling (the categories do not depend on
the seed) while no partitioner can profit from contiguous neuron ids. The input side of
layer 1 keeps its labels: they are pixel ids, and the image's locality is what makes a
few percent of MNIST rows survive 120 layers, as with the published networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import EDGES_PER_NEURON, GENERATED_WEIGHT
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.network import Network, resolve_bias

# Calibrated on the shipped MNIST sample (1024 x 120, 10,000 rows): block 2 (radix 16)
# categorises 298 rows (2.98%), the published network 1,812 of 60,000 (3.02%). Blocks of
# 1 / 4 / 8 / 16 give 29 / 1,828 / 935 / 2,034 rows. See README "Generator".
DEFAULT_BLOCK = 2


@dataclass(frozen=True)
class GeneratorParams:
    neurons: int
    layers: int
    seed: int = 0
    block: int = DEFAULT_BLOCK
    bias: float | None = None

    @property
    def radix(self) -> int:
        return EDGES_PER_NEURON // self.block

    def validate(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"--layers must be >= 1, got {self.layers}")
        if self.block < 1 or EDGES_PER_NEURON % self.block or self.block == EDGES_PER_NEURON:
            choices = [b for b in range(1, EDGES_PER_NEURON) if EDGES_PER_NEURON % b == 0]
            raise ConfigError(f"--block must be one of {choices}, got {self.block}")
        if self.neurons % self.block:
            raise ConfigError(f"--neurons {self.neurons} is not divisible by --block {self.block}")
        if self.neurons // self.block < self.radix:
            raise ConfigError(
                f"--neurons {self.neurons} is too small: needs at least "
                f"{self.radix * self.block} for block {self.block}"
            )


def strides(supernodes: int, radix: int) -> list[int]:
    """Strides r^0 .. r^(D-1) with r * stride <= M, so the r targets stay distinct."""
    result = [1]
    while result[-1] * radix * radix <= supernodes:
        result.append(result[-1] * radix)
    return result


def base_layer(neurons: int, block: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target neuron ids of one unpermuted layer (0-based)."""
    radix = EDGES_PER_NEURON // block
    supernodes = neurons // block
    m = np.arange(supernodes).reshape(-1, 1, 1, 1)
    t = np.arange(radix).reshape(1, -1, 1, 1)
    a = np.arange(block).reshape(1, 1, -1, 1)
    b = np.arange(block).reshape(1, 1, 1, -1)
    shape = (supernodes, radix, block, block)
    source = np.broadcast_to(m * block + a, shape)
    target = np.broadcast_to(((m + t * stride) % supernodes) * block + b, shape)
    return source.ravel(), target.ravel()


def generate(params: GeneratorParams) -> Network:
    """Build the network; deterministic for a given parameter set (seed included)."""
    params.validate()
    bias = resolve_bias(params.neurons, params.bias)
    rng = np.random.default_rng(params.seed)
    cycle = strides(params.neurons // params.block, params.radix)
    labels = np.arange(params.neurons)  # input side of layer 1: pixel ids, never renamed
    layers = []
    for k in range(params.layers):
        source, target = base_layer(params.neurons, params.block, cycle[k % len(cycle)])
        next_labels = rng.permutation(params.neurons)
        weights = np.full(source.size, GENERATED_WEIGHT)
        layer = sp.csr_matrix(
            (weights, (labels[source], next_labels[target])),
            shape=(params.neurons, params.neurons),
        )
        layer.sort_indices()
        layers.append(layer)
        labels = next_labels
    return Network(neurons=params.neurons, layers=tuple(layers), bias=bias)
