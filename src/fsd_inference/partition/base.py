"""The partitioner interface: who owns which neuron of every activation layer."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from fsd_inference.exceptions import ConfigError
from fsd_inference.model.base import NetworkSource


class Partitioner(ABC):
    """Assigns every neuron of Y_0 .. Y_L to one of ``parts`` workers.

    The public :meth:`partition` validates and shapes the result; implementations fill
    in :meth:`_owners`. The result has shape ``(L + 1, N)``: row ``l`` says which
    worker produces (for l >= 1) or holds (l = 0, the input columns) each neuron of Y_l.
    """

    name: str = ""

    def partition(self, network: NetworkSource, parts: int, seed: int = 0) -> np.ndarray:
        if parts < 1:
            raise ConfigError(f"--workers must be >= 1, got {parts}")
        owners = np.asarray(self._owners(network, parts, seed), dtype=np.int32)
        if owners.ndim == 1:
            owners = np.broadcast_to(owners, (network.depth + 1, network.neurons)).copy()
        expected = (network.depth + 1, network.neurons)
        if owners.shape != expected:
            raise AssertionError(f"{self.name}: owners shape {owners.shape}, expected {expected}")
        if owners.min() < 0 or owners.max() >= parts:
            raise AssertionError(f"{self.name}: owner ids outside 0..{parts - 1}")
        return owners

    @abstractmethod
    def _owners(self, network: NetworkSource, parts: int, seed: int) -> np.ndarray:
        """Owners as ``(N,)`` (one partition for all layers) or ``(L + 1, N)``."""
