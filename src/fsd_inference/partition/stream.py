"""A one-pass (streaming) partition of one layer's hypergraph, for layers too large for
Mt-KaHyPar to partition in seconds.

Same model and objective as :mod:`~fsd_inference.partition.hypergraph` (nets = what a
source sends; km1 = words on the wire; terminals = the previous layer's fixed owners) and
the same balance bound, but no multilevel search: vertices are visited once in a seeded
random order and each goes to the block that adds the fewest new (net, block) pairs,
that is, where most of its sources already are or already send to, discounted by how
full the block is (linear deterministic greedy, Stanton & Kliot, KDD 2012), never past
the bound. Each placement is seen by the next vertex: a handful of vectorised steps per
vertex.

Why: a 65536-neuron layer without twins is 65536 vertices; Mt-KaHyPar's deterministic
preset took about 30 s a layer for 62 blocks on this 2-core machine (an hour for 120
layers), this pass about a second. What it costs in traffic against Mt-KaHyPar on every
layer is measured by ``bench/partition_volume.py --stream`` and stated in the README.
"""

from __future__ import annotations

import itertools

import numpy as np


def stream_partition(nets: list[list[int]], weights: np.ndarray, parts: int, bound: int,
                     seed: int) -> np.ndarray:
    """Owners of the ``weights.size`` free vertices; pins >= that number are terminals
    (terminal ``free + q`` is fixed to block q), as in the Mt-KaHyPar call."""
    free = int(weights.size)
    sizes = np.fromiter((len(n) for n in nets), dtype=np.int64, count=len(nets))
    flat = np.fromiter(itertools.chain.from_iterable(nets), dtype=np.int64,
                       count=int(sizes.sum()))
    net_of = np.repeat(np.arange(len(nets)), sizes)
    present = np.zeros((len(nets), parts), dtype=bool)  # block already on the net
    fixed = flat >= free
    present[net_of[fixed], flat[fixed] - free] = True
    vertex, net = flat[~fixed], net_of[~fixed]
    order = np.argsort(vertex, kind="stable")
    vertex, net = vertex[order], net[order]
    starts = np.searchsorted(vertex, np.arange(free + 1))  # vertex v's nets: starts[v]:[v+1]

    owners = np.full(free, -1, dtype=np.int64)
    load = np.zeros(parts, dtype=np.float64)
    for v in np.random.default_rng(seed).permutation(free).tolist():
        pins = net[starts[v]:starts[v + 1]]
        gain = present[pins].sum(axis=0)  # nets of v that already reach each block
        room = load + weights[v] <= bound
        if not room.any():  # cannot happen while the bound holds; keep it safe
            room = load == load.min()
        score = (gain + 1e-3) * (1.0 - load / bound)
        score[~room] = -np.inf
        block = int(np.argmax(score))
        owners[v] = block
        load[block] += weights[v]
        present[pins, block] = True
    return owners
