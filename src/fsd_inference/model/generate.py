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

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fsd_inference.constants import EDGES_PER_NEURON, GENERATED_WEIGHT
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.network import Network, materialise, resolve_bias

# Calibration (bench/calibration.py, README "Generator"): the categorised fraction of the
# upsampled MNIST sample after 120 layers falls as a stride cycle mixes more of the M
# super-nodes (r^D of them, D strides): the band of stride 1 alone keeps 63% at 1024, a
# complete butterfly (r^D = M) 0.3%. At 1024 block 2 (radix 16, strides 1 and 16: half the
# super-nodes) categorises 298 of 10,000 rows (2.98%), the published network 1,812 of
# 60,000 (3.02%). Each N takes the block whose butterfly mixes half the super-nodes in one
# cycle (r^D = M / 2), with the largest radix where two blocks do: 4096 -> 4 (4.75%),
# 16384 -> 2 (1.0%), 65536 -> 1 (0.5%); every other block is further from 3%.
DEFAULT_BLOCK = 2
# N -> (block, period); period None: every stride of the radix-r butterfly.
CALIBRATED: dict[int, tuple[int, int | None]] = {
    1024: (2, None), 4096: (4, None), 16384: (2, None), 65536: (1, None),
}


def default_block(neurons: int) -> int:
    """The calibrated block size for ``neurons`` (DEFAULT_BLOCK where none was measured)."""
    return CALIBRATED.get(neurons, (DEFAULT_BLOCK, None))[0]


def default_period(neurons: int, block: int) -> int | None:
    """The calibrated period for ``neurons`` when ``block`` is the calibrated block."""
    calibrated_block, period = CALIBRATED.get(neurons, (DEFAULT_BLOCK, None))
    return period if block == calibrated_block else None


@dataclass(frozen=True)
class GeneratorParams:
    neurons: int
    layers: int
    seed: int = 0
    block: int | None = None  # None: calibrated by N (default_block)
    bias: float | None = None
    period: int | None = None  # strides per cycle; None: calibrated by N, else all

    @property
    def block_size(self) -> int:
        return default_block(self.neurons) if self.block is None else self.block

    def cycle(self) -> list[int]:
        """The strides the layers cycle through: the first ``period`` of the butterfly's."""
        block = self.block_size
        every = strides(self.neurons // block, EDGES_PER_NEURON // block)
        period = self.period if self.period is not None else default_period(self.neurons, block)
        return every if period is None else every[:period]

    @property
    def radix(self) -> int:
        return EDGES_PER_NEURON // self.block_size

    def validate(self) -> None:
        block = self.block_size
        if self.layers < 1:
            raise ConfigError(f"--layers must be >= 1, got {self.layers}")
        if block < 1 or EDGES_PER_NEURON % block or block == EDGES_PER_NEURON:
            choices = [b for b in range(1, EDGES_PER_NEURON) if EDGES_PER_NEURON % b == 0]
            raise ConfigError(f"--block must be one of {choices}, got {block}")
        if self.neurons % block:
            raise ConfigError(f"--neurons {self.neurons} is not divisible by --block {block}")
        if self.neurons // block < self.radix:
            raise ConfigError(
                f"--neurons {self.neurons} is too small: needs at least "
                f"{self.radix * block} for block {block}"
            )
        if self.period is not None:
            most = len(strides(self.neurons // block, self.radix))
            if not 1 <= self.period <= most:
                raise ConfigError(f"--period must be between 1 and {most} for {self.neurons} "
                                  f"neurons and block {block}, got {self.period}")


def strides(supernodes: int, radix: int) -> list[int]:
    """Strides r^0 .. r^(D-1) with r * stride <= M, so the r targets stay distinct."""
    result = [1]
    while result[-1] * radix * radix <= supernodes:
        result.append(result[-1] * radix)
    return result


def layer_targets(neurons: int, block: int, stride: int) -> np.ndarray:
    """``(N, 32)``: the targets of every unrelabelled source neuron in one layer (0-based).

    Source ``u = m * B + a`` (super-node m, position a in its block) feeds
    ``((m + t * stride) mod M) * B + b`` for every t < r and b < B: the same 32 targets
    for every a of a block (the dense Kronecker block).
    """
    radix = EDGES_PER_NEURON // block
    supernodes = neurons // block
    m = np.arange(supernodes)
    fed = (m[:, None] + np.arange(radix)[None, :] * stride) % supernodes  # (M, r)
    targets = (fed[:, :, None] * block + np.arange(block)).reshape(supernodes, -1)
    return np.repeat(targets, block, axis=0)


def build_layer(neurons: int, block: int, stride: int, labels: np.ndarray,
                next_labels: np.ndarray) -> sp.csr_matrix:
    """One relabelled layer, built straight into CSR (rows of exactly 32 sorted ids):
    no COO sort, so a 65536-neuron layer takes milliseconds, not seconds."""
    columns = next_labels[layer_targets(neurons, block, stride)]
    indices = np.empty_like(columns, dtype=np.int32)
    indices[labels] = columns  # row labels[u] holds source u's edges
    indices.sort(axis=1)
    indptr = np.arange(neurons + 1, dtype=np.int32) * EDGES_PER_NEURON
    weights = np.full(indices.size, GENERATED_WEIGHT)
    layer = sp.csr_matrix((weights, indices.ravel(), indptr), shape=(neurons, neurons))
    layer.has_sorted_indices = True
    return layer


class GeneratedNetwork(NetworkSource):
    """The generated network, made layer by layer on demand (never held whole).

    Layer k needs the relabelling permutations k - 1 and k, drawn in sequence from one
    seeded generator, so :meth:`iter_layers` walks them once and a lone :meth:`layer`
    call replays the draws before it (one permutation of N per layer: cheap).
    """

    def __init__(self, params: GeneratorParams) -> None:
        params.validate()
        self.params = params
        self.neurons = params.neurons
        self.bias = resolve_bias(params.neurons, params.bias)
        self.block = params.block_size
        self._strides = params.cycle()

    @property
    def depth(self) -> int:
        return self.params.layers

    @property
    def edges(self) -> int:
        return EDGES_PER_NEURON * self.neurons * self.depth

    def _labels(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(input labels, output labels) of layer 1, 2, ... in order."""
        rng = np.random.default_rng(self.params.seed)
        labels = np.arange(self.neurons)  # input side of layer 1: pixel ids, never renamed
        for _ in range(self.depth):
            next_labels = rng.permutation(self.neurons)
            yield labels, next_labels
            labels = next_labels

    def _build(self, k: int, labels: np.ndarray, next_labels: np.ndarray,
               dtype: str | None) -> sp.csr_matrix:
        stride = self._strides[(k - 1) % len(self._strides)]
        layer = build_layer(self.neurons, self.block, stride, labels, next_labels)
        return layer if dtype is None else layer.astype(dtype)

    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        labels, next_labels = next(itertools.islice(self._labels(), k - 1, None))
        return self._build(k, labels, next_labels, dtype)

    def iter_layers(self, start: int = 1, stop: int | None = None, dtype: str | None = None
                    ) -> Iterator[sp.csr_matrix]:
        last = self.depth if stop is None else stop
        for k, (labels, next_labels) in enumerate(self._labels(), start=1):
            if k > last:
                return
            if k >= start:
                yield self._build(k, labels, next_labels, dtype)


def generate(params: GeneratorParams) -> Network:
    """Build the whole network in memory; deterministic for a given parameter set (seed
    included). Large networks: iterate :class:`GeneratedNetwork` instead."""
    return materialise(GeneratedNetwork(params))
