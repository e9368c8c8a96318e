"""Hypergraph partitioning (Mt-KaHyPar): one partition per activation layer.

The model. Vertices are the neurons of Y_l, weighted by their work (the nonzeros of
their column of W_l: in-edges). Every neuron j of Y_{l-1} is one net: j's owner plus
the consumers of j in layer l. Its connectivity-1 (lambda - 1) is the number of other
workers that need Y_{l-1}[:, j], so the km1 objective summed over the nets is exactly
the words a layer communicates. Twins (neurons with identical weight columns, so
identical activations; RadiX-Nets pair them up) are folded as the plan folds them
(:func:`~fsd_inference.partition.plan.twin_classes`): a twin class of Y_l is one vertex,
so twins always share an owner, and a net stands for one (source class, owner) pair,
so km1 equals ``CommPlan.neurons_per_layer`` (columns sent, twins once) exactly.

Why one partition per layer (owners ``(L + 1, N)``), measured with ``build_plan`` on
the generated 1024 x 120 network, 8 workers. Random sends 6,638 columns per layer
(796,525 in all; 7,077 neuron copies |R_l(q, p)| per layer, the published figure):

* One partition for all layers (a hypergraph over N vertices carrying every layer's
  fan-out nets) sent 6,443 per layer (773,114; 6,888 copies) in 160 s: no better than
  random, because the generator relabels neurons randomly between layers, so neuron j
  of Y_l and neuron j of Y_{l+1} have nothing in common.
* A joint hypergraph with one vertex per (layer, neuron) minimises the true total
  (km1 = 7,168 words in all) only by a pipeline cut: each layer lands whole on one
  worker (its largest part is 8x the mean on every layer, 7 of 8 workers idle).
  Mt-KaHyPar balances the total weight, not each layer, so that model cannot express
  row partitioning.
* Layer by layer, each layer partitioned with the previous layer's owners fixed (as
  Demirci & Ferhatosmanoglu, ICS 2021, do for sparse DNNs) sends 500 per layer
  (60,061 in all, 7.5% of random; 999 copies per layer against the published
  system's ~3,600 on the real network), every layer balanced, in about 6 s of CPU.
  Coordinate-descent sweeps afterwards (each layer again with both neighbours fixed)
  gained 0.3% (500 -> 499 per layer) for 8 s more CPU, so they are not run.

The procedure: layer 1 is partitioned on its own (nets = each input's consumers; the
inputs have no owners yet), then every layer l = 2..L with the owners of Y_{l-1}
fixed, and finally the inputs Y_0 with the owners of Y_1 fixed (each input goes where
its consumers are, within balance). Fixed owners enter as P terminal vertices,
terminal q pinned to block q; a net gets the terminal of its sources' owner (fan-out
into the free layer) or of its consumers' owners (inputs into the fixed layer 1).

Balance: per layer, every worker's work is at most ``(1 + EPSILON) * ceil(W_l / P)``,
W_l the layer's nonzeros (``EPSILON`` = 3%, Mt-KaHyPar's usual default; layer 0 counts
neurons, as inputs carry no work). Where no partition can meet it (a twin class
heavier than the bound, or no more classes with work than workers) classes are dealt
out by weight instead, heaviest first to the least-loaded worker; some workers idle.

Determinism: Mt-KaHyPar runs single-threaded from its deterministic preset, the seed
written into the context of every call, so a seed gives the same owners in every
process (the default preset is not reproducible once it coarsens). The preset is tuned
(``_CONTEXT_INI``): a layer has ~N vertices, below the preset's 160 * k coarsening
limit, so the stock preset would run 20 initial-partitioning rounds on the whole
layer (1-2 s per layer) for the cut the tuned one finds in 0.05 s.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.model.base import NetworkSource
from fsd_inference.partition.base import Partitioner
from fsd_inference.partition.plan import distinct, twin_classes
from fsd_inference.partition.stream import stream_partition

EPSILON = 0.03  # allowed imbalance of each layer's work, see the module docstring
# Layers with more vertices (twin classes) than this are partitioned in one streaming pass
# (partition.stream): Mt-KaHyPar took ~30 s a layer at 65536 (no twins, 62 blocks) here.
STREAM_ABOVE = 40_000
_THREADS = 1  # results must not depend on the machine's core count

# The pinned mtkahypar 1.7's "deterministic" preset with c-t 160 -> 20 (coarsening limit
# per block) and i-runs 20 -> 3. The default preset is not reproducible once it coarsens
# (repeated calls with one seed differ); this one is. If a later version cannot parse
# it, the stock deterministic preset is used instead (about as good, 30x slower here).
_CONTEXT_INI = """\
mode=direct
preset-type=deterministic
deterministic=true
maxnet-removal-factor=0.01
smallest-maxnet-threshold=50000
maxnet-ignore=1000
num-vcycles=0
s-use-localized-random-shuffle=false
s-static-balancing-work-packages=128
p-enable-community-detection=true
p-louvain-edge-weight-function=hybrid
p-max-louvain-pass-iterations=5
p-louvain-min-vertex-move-fraction=0.01
p-vertex-degree-sampling-threshold=200000
p-louvain-low-memory-contraction=true
p-num-sub-rounds=16
c-type=deterministic_multilevel_coarsener
c-use-adaptive-edge-size=true
c-min-shrink-factor=1.01
c-max-shrink-factor=2.5
c-s=1
c-t=20
c-vertex-degree-sampling-threshold=200000
c-num-sub-rounds=3
c-rating-score=heavy_edge
c-rating-heavy-node-penalty=no_penalty
c-rating-acceptance-criterion=best_prefer_unmatched
i-mode=rb
i-runs=3
i-use-adaptive-ip-runs=false
i-perform-refinement-on-best-partitions=false
i-fm-refinement-rounds=3
i-lp-maximum-iterations=20
i-lp-initial-block-size=5
r-rebalancer-type=advanced_rebalancer
i-r-refine-until-no-improvement=false
i-r-lp-type=deterministic
i-r-lp-maximum-iterations=5
i-r-sync-lp-sub-rounds=1
i-r-lp-he-size-activation-threshold=100
i-r-sync-lp-active-nodeset=true
i-r-fm-type=do_nothing
i-population-size=64
r-refine-until-no-improvement=false
r-lp-type=deterministic
r-lp-maximum-iterations=5
r-sync-lp-sub-rounds=1
r-lp-he-size-activation-threshold=100
r-sync-lp-active-nodeset=true
r-fm-type=do_nothing
"""


def max_part_weight(total: int, parts: int, epsilon: float = EPSILON) -> int:
    """The heaviest a worker's share of one layer may be: ``(1 + eps) * ceil(total / P)``."""
    return math.floor((1.0 + epsilon) * math.ceil(total / parts))


class HypergraphPartitioner(Partitioner):
    """Per-layer connectivity-1 hypergraph partition, each layer against the previous."""

    name = "hypergraph"

    def __init__(self, epsilon: float = EPSILON, stream_above: int = STREAM_ABOVE) -> None:
        self.epsilon = epsilon
        self.stream_above = stream_above

    def _owners(self, network: NetworkSource, parts: int, seed: int) -> np.ndarray:
        neurons = network.neurons
        owners = np.zeros((network.depth + 1, neurons), dtype=np.int64)
        if parts == 1:
            return owners
        source_class = np.arange(neurons)  # Y_0 has no twins
        for layer, weights in enumerate(network.iter_layers(), start=1):
            csr = _canonical(weights)
            # twins (identical columns) travel once and compute alike: one vertex each class
            classes = np.unique(twin_classes(csr, neurons), return_inverse=True)[1].ravel()
            work = np.bincount(classes, weights=np.diff(csr.tocsc().indptr)).astype(np.int64)
            rows = np.repeat(np.arange(neurons), np.diff(csr.indptr))
            pins = classes[csr.indices]
            if layer == 1:  # inputs have no owner yet: a net per input, its consumers only
                nets = _nets(rows, pins, None, neurons, work.size)
            else:  # a net per (source class, owner): what that owner sends, once
                group_of, group = np.unique(source_class * parts + owners[layer - 1],
                                            return_inverse=True)
                group = group.ravel()
                nets = _nets(group[rows], pins, work.size + group_of % parts, group_of.size,
                             work.size + parts)
            chosen = self._layer(nets, work, parts, layer > 1, _seed(seed, layer))
            owners[layer] = chosen[classes]
            source_class = classes
        # the inputs last, each towards the owners of its consumers in Y_1
        first = _canonical(network.layer(1))
        rows = np.repeat(np.arange(neurons), np.diff(first.indptr))
        nets = _nets(rows, neurons + owners[1][first.indices], np.arange(neurons), neurons,
                     neurons + parts)
        inputs = np.ones(neurons, dtype=np.int64)  # no work; one column each
        owners[0] = self._layer(nets, inputs, parts, True, _seed(seed, 0))
        return owners

    def _layer(self, nets: list[list[int]], weights: np.ndarray, parts: int,
               terminals: bool, seed: int) -> np.ndarray:
        """Owners of one layer's ``weights.size`` free vertices (+ P terminals if used)."""
        bound = max_part_weight(int(weights.sum()), parts, self.epsilon)
        if np.count_nonzero(weights) <= parts or int(weights.max()) > bound:
            return deal_by_weight(weights, parts)
        free = int(weights.size)
        if free > self.stream_above:  # too large for Mt-KaHyPar in seconds: one greedy pass
            owners = stream_partition(nets, weights, parts, bound, seed)
        else:
            owners = self._multilevel(nets, weights, parts, terminals, seed, bound)
        if np.bincount(owners, weights=weights, minlength=parts).max() > bound:
            return deal_by_weight(weights, parts)  # no partition met the bound
        return owners

    def _multilevel(self, nets: list[list[int]], weights: np.ndarray, parts: int,
                    terminals: bool, seed: int, bound: int) -> np.ndarray:
        """Mt-KaHyPar's partition of the free vertices (terminals pinned to their blocks)."""
        free = int(weights.size)
        context = _context(parts, self.epsilon, seed)
        # terminals weigh 1: Mt-KaHyPar 1.7 ignores the pin of a zero-weight fixed vertex
        node_weights = weights.tolist() + ([1] * parts if terminals else [])
        context.set_individual_target_block_weights([bound + int(terminals)] * parts)
        hypergraph = _initializer().create_hypergraph(
            context, len(node_weights), len(nets), nets, node_weights, [1] * len(nets))
        if terminals:
            hypergraph.add_fixed_vertices([-1] * free + list(range(parts)), parts)
        result = hypergraph.partition(context)
        return np.asarray(result.get_partition(), dtype=np.int64)[:free]


def deal_by_weight(weights: np.ndarray, parts: int) -> np.ndarray:
    """Heaviest vertex first to the least-loaded worker (ties: fewest vertices, lowest id).

    The fallback where a hypergraph partition cannot be balanced; no vertex exceeds the
    bound on its own, or the layer has no more vertices with work than workers.
    """
    owners = np.zeros(weights.size, dtype=np.int64)
    load = np.zeros(parts, dtype=np.int64)
    count = np.zeros(parts, dtype=np.int64)
    for vertex in np.argsort(-weights, kind="stable"):
        target = int(np.lexsort((count, load))[0])
        owners[vertex] = target
        load[target] += weights[vertex]
        count[target] += 1
    return owners


def _canonical(weights: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(weights, copy=True)
    matrix.sum_duplicates()  # unique, sorted consumers per row: no repeated pins
    return matrix


def _seed(seed: int, layer: int) -> int:
    return (seed * 1_000_003 + layer) % (2**31 - 1)


def _nets(group: np.ndarray, pins: np.ndarray, own: np.ndarray | None, groups: int,
          width: int) -> list[list[int]]:
    """One net per group: the distinct ``pins`` of its entries, plus ``own[g]`` if given.

    ``group[i]`` and ``pins[i]`` describe entry i; pin ids are below ``width``. Nets of one
    pin cannot be cut and are left out.
    """
    group = np.asarray(group, dtype=np.int64)
    pins = np.asarray(pins, dtype=np.int64)
    if own is not None:
        group = np.concatenate([group, np.arange(groups)])
        pins = np.concatenate([pins, np.asarray(own, dtype=np.int64)])
    key = distinct(group * width + pins)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(key // width, minlength=groups))])
    values = (key % width).tolist()
    return [values[a:b] for a, b in itertools.pairwise(bounds.tolist()) if b > a + 1]


@functools.cache
def _mtkahypar() -> Any:
    import mtkahypar  # a compiled extension: imported only when a partition is asked for

    return mtkahypar


@functools.cache
def _initializer() -> Any:
    return _mtkahypar().initialize(_THREADS, False)


@functools.cache
def _context_dir() -> Path | None:
    """A private folder for context files (Mt-KaHyPar reads a custom context only from a
    file), or None when this Mt-KaHyPar cannot parse ours (other parameter names)."""
    directory = Path(tempfile.mkdtemp(prefix="fsd-mtkahypar-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    try:
        _read_context(directory, 0)
    except (ValueError, RuntimeError):
        return None
    return directory


def _read_context(directory: Path, seed: int) -> Any:
    # the seed lives in the context: the deterministic preset ignores mtkahypar.set_seed
    with tempfile.NamedTemporaryFile("w", suffix=".ini", dir=directory,
                                     encoding="utf-8") as handle:
        handle.write(f"{_CONTEXT_INI}seed={seed}\n")
        handle.flush()
        return _initializer().context_from_file(handle.name)


def _context(parts: int, epsilon: float, seed: int) -> Any:
    """A fresh context per call: reusing one across partitions crashes Mt-KaHyPar 1.7."""
    mtkahypar = _mtkahypar()
    directory = _context_dir()
    if directory is not None:
        context = _read_context(directory, seed)
    else:  # the stock preset: deterministic too, but with its own fixed seed
        context = _initializer().context_from_preset(mtkahypar.PresetType.DETERMINISTIC)
    context.set_partitioning_parameters(parts, epsilon, mtkahypar.Objective.KM1)
    context.logging = False
    return context
