"""Who owns which neuron of every layer, for a shape: one partition per stage.

Stage s's slots own the neurons of its layers; the partitioner runs on the sub-network
of those layers with the stage's part count (a stage of one part owns everything, no
partitioner needed). The input layer (Y_0) belongs to stage 0's partition; stage s > 0
starts from Y_{first - 1}, owned by stage s - 1, and the communication plan turns that
boundary into ordinary blocks from the previous stage's slots.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from fsd_inference.model.base import NetworkSource
from fsd_inference.strategy.shape import Shape

# (sub-network, parts) -> owners of shape (sub.depth + 1, N) in 0..parts-1
Partition = Callable[[NetworkSource, int], np.ndarray]


class LayerRange(NetworkSource):
    """Layers ``first..last`` (1-based, inclusive) of another source, as a network of
    their own (a pipeline stage's): read through, never copied."""

    def __init__(self, source: NetworkSource, first: int, last: int) -> None:
        self.source, self.first, self.last = source, first, last
        self.neurons, self.bias = source.neurons, source.bias

    @property
    def depth(self) -> int:
        return self.last - self.first + 1

    def _layer(self, k: int, dtype: str | None) -> sp.csr_matrix:
        return self.source.layer(self.first + k - 1, dtype)


def sub_network(network: NetworkSource, first: int, last: int) -> NetworkSource:
    """Layers ``first..last`` (1-based, inclusive) as a network of their own."""
    if first == 1 and last == network.depth:
        return network
    return LayerRange(network, first, last)


def shape_owners(network: NetworkSource, shape: Shape, partition: Partition) -> np.ndarray:
    """Owners ``(L + 1, N)`` as slot ids ``0..shape.width - 1``."""
    owners = np.zeros((network.depth + 1, network.neurons), dtype=np.int32)
    for offset, stage in zip(shape.stage_offsets(), shape.stages, strict=True):
        if stage.parts == 1:
            stage_owners = np.zeros((stage.layers + 1, network.neurons), dtype=np.int32)
        else:
            stage_owners = np.asarray(
                partition(sub_network(network, stage.first, stage.last), stage.parts),
                dtype=np.int32)
        owners[stage.first:stage.last + 1] = offset + stage_owners[1:]
        if stage.first == 1:
            owners[0] = offset + stage_owners[0]
    return owners
