"""The two baselines every report shows beside the hypergraph partition."""

from __future__ import annotations

import numpy as np

from fsd_inference.model.base import NetworkSource
from fsd_inference.partition.base import Partitioner


class ContiguousPartitioner(Partitioner):
    """Neurons 0..N-1 cut into P nearly equal contiguous ranges (the naive split)."""

    name = "contiguous"

    def _owners(self, network: NetworkSource, parts: int, seed: int) -> np.ndarray:
        return (np.arange(network.neurons) * parts) // network.neurons


class RandomPartitioner(Partitioner):
    """A seeded random balanced assignment: the expected traffic of knowing nothing."""

    name = "random"

    def _owners(self, network: NetworkSource, parts: int, seed: int) -> np.ndarray:
        balanced = (np.arange(network.neurons) * parts) // network.neurons
        return np.random.default_rng(seed).permutation(balanced)
