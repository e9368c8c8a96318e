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

from fsd_inference.model.network import Network
from fsd_inference.strategy.shape import Shape

# (sub-network, parts) -> owners of shape (sub.depth + 1, N) in 0..parts-1
Partition = Callable[[Network, int], np.ndarray]


def sub_network(network: Network, first: int, last: int) -> Network:
    """Layers ``first..last`` (1-based, inclusive) as a network of their own."""
    if first == 1 and last == network.depth:
        return network
    return Network(network.neurons, network.layers[first - 1:last], network.bias)


def shape_owners(network: Network, shape: Shape, partition: Partition) -> np.ndarray:
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
