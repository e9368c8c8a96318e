"""The communication plan: per layer and ordered worker pair, which neurons move.

For layer l (Y_l = f(Y_{l-1} @ W_l)) worker p produces the columns S_p^l of Y_l it owns
and needs Y_{l-1}[:, j] for every j with an edge into S_p^l. Those j owned by another
worker q form R_l(q, p): fixed by the weights alone, so computed once, here.

Each worker gets a :class:`WorkerShard`: for every layer, its slice of W_l (only the
rows it needs, only the columns it owns) and index maps that say where each peer's
block lands. The worker multiplies one assembled ``Y_in @ W_shard`` whose columns are
in ascending global neuron order, which is exactly the summation order of the
single-process reference: results are bit-for-bit identical for any partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.exceptions import InputFormatError
from fsd_inference.kernel.twins import twin_outputs
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.binary import (
    BundleWriter,
    pack_csr,
    read_bundle,
    unpack_csr,
    write_bundle,
)
from fsd_inference.model.validate import MAX_DIMENSION, check_csr, check_index_vector


@dataclass(frozen=True)
class LayerShard:
    """What one worker needs to compute its part of one layer."""

    inputs: np.ndarray  # sorted global ids of Y_{l-1} columns it multiplies with
    outputs: np.ndarray  # sorted global ids of Y_l columns it produces (owns)
    weights: sp.csr_matrix  # W_l[inputs][:, outputs]
    local_from: np.ndarray  # positions in the previous layer's outputs of local inputs
    local_to: np.ndarray  # ... and their positions in ``inputs``
    recv: dict[int, np.ndarray] = field(default_factory=dict)  # source -> positions in inputs
    # source -> for each of recv[source], the column of the received block that carries it
    # (twins share a column); absent when the block has one column per position
    expand: dict[int, np.ndarray] = field(default_factory=dict)
    send: dict[int, np.ndarray] = field(default_factory=dict)  # target -> positions in prev outputs


@dataclass(frozen=True)
class WorkerShard:
    worker: int
    workers: int
    neurons: int
    bias: float
    model: str  # fingerprint of the network it was cut from
    input_columns: np.ndarray  # global ids of Y_0 columns this worker starts with
    layers: tuple[LayerShard, ...]

    @property
    def depth(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class CommPlan:
    """Ownership and traffic for every layer.

    ``copies[l-1][q, p] = |R_l(q, p)|``, the neuron copies p needs from q (the figure
    the published system reports); ``volume[l-1][q, p]`` the columns q actually sends
    once twins are folded (see :func:`twin_classes`). Diagonals are 0.
    """

    workers: int
    owners: np.ndarray  # (L + 1, N)
    volume: np.ndarray  # (L, P, P)
    copies: np.ndarray  # (L, P, P)
    work: np.ndarray  # (L, P): weights each worker multiplies with per layer

    @property
    def neurons_per_layer(self) -> np.ndarray:
        return np.asarray(self.volume.sum(axis=(1, 2)))

    @property
    def total_neurons(self) -> int:
        return int(self.volume.sum())

    @property
    def messages_per_layer(self) -> np.ndarray:
        """Ordered pairs that exchange anything (the messages a layer needs at least)."""
        return np.asarray((self.volume > 0).sum(axis=(1, 2)))

    def owned(self, layer: int, worker: int) -> np.ndarray:
        return np.flatnonzero(self.owners[layer] == worker)


MAX_TWIN_FAN_IN = 256  # wider columns are assumed distinct (keeps detection O(N * 256))


def twin_classes(weights: sp.spmatrix | None, neurons: int) -> np.ndarray:
    """Class ids for the neurons a layer produces: equal ids = equal activations.

    Two output neurons with identical weight columns (same sources, same values) get
    identical activations, bit for bit, since every path sums in ascending source order.
    RadiX-Nets are full of them (the Kronecker dense blocks), so a sender ships one
    column per class and the receiver copies it. ``None`` (the input layer) or columns
    wider than MAX_TWIN_FAN_IN: every neuron is its own class.
    """
    if weights is None:
        return np.arange(neurons)
    csc = sp.csc_matrix(weights)
    csc.sort_indices()
    fan_in = np.diff(csc.indptr)
    width = int(fan_in.max()) if fan_in.size else 0
    if width == 0 or width > MAX_TWIN_FAN_IN:
        return np.arange(neurons)
    column = np.repeat(np.arange(neurons), fan_in)
    slot = np.arange(csc.nnz) - np.repeat(csc.indptr[:-1], fan_in)
    constant = bool(csc.nnz) and bool(np.all(csc.data == csc.data[0]))
    keys = np.full((neurons, (1 if constant else 2) * width + 1), -1.0)
    keys[:, 0] = fan_in
    keys[column, 1 + slot] = csc.indices
    if not constant:  # all weights equal (every Graph Challenge layer): values say nothing
        keys[column, 1 + width + slot] = csc.data.astype(np.float64)
    # classes numbered in the rows' lexicographic order, as np.unique(keys, axis=0) does,
    # by one lexsort (0.1 s at 65536 neurons against np.unique's 1.8 s)
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    ids = np.concatenate([[0], np.cumsum(np.any(ordered[1:] != ordered[:-1], axis=1))])
    inverse = np.empty(neurons, dtype=np.int64)
    inverse[order] = ids
    return inverse


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for 1-D integers, by sorting: NumPy 2's hash-based unique
    took 8 s on the 2 million keys of one 65536-neuron layer, a sort 0.1 s."""
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def needed_inputs(weights_csc: sp.csc_matrix, outputs: np.ndarray) -> np.ndarray:
    """Sorted ids of the rows (source neurons) with an edge into any of ``outputs``."""
    sub = weights_csc[:, outputs]
    return distinct(sub.indices)


def plan_layers(network: NetworkSource, owners: np.ndarray, workers: int
                ) -> Iterator[tuple[list[LayerShard], np.ndarray, np.ndarray]]:
    """Layer by layer: every worker's :class:`LayerShard` of W_k, and the layer's
    ``volume`` and ``copies`` (P x P). One layer (and the one before it, for its twins)
    is in memory at a time, so the plan of any network fits in memory.

    A worker that owns no neuron of a layer (more workers than neurons with work) simply
    idles through it: it has nothing to multiply, send or receive.
    """
    previous = [np.flatnonzero(owners[0] == p) for p in range(workers)]
    twins = twin_classes(None, network.neurons)
    for k, w in enumerate(network.iter_layers(), start=1):
        csc = w.tocsc()
        csr = sp.csr_matrix(w)
        volume = np.zeros((workers, workers), dtype=np.int64)
        copies = np.zeros_like(volume)
        current = [np.flatnonzero(owners[k] == p) for p in range(workers)]
        shards = [
            _layer_shard(csr, csc, owners[k - 1], previous, current[p], p)
            for p in range(workers)
        ]
        for p, shard in enumerate(shards):
            for q, positions in shard.recv.items():
                needed = shard.inputs[positions]
                _, first, column = np.unique(twins[needed], return_index=True,
                                             return_inverse=True)
                representatives = needed[np.sort(first)]
                if representatives.size < needed.size:
                    # block columns follow the representatives' (ascending) order
                    order = np.argsort(np.argsort(first))
                    shard.expand[q] = order[np.asarray(column).ravel()]
                copies[q, p] = needed.size
                volume[q, p] = representatives.size
                # the sender's view, as positions in its own outputs
                shards[q].send[p] = np.searchsorted(previous[q], representatives)
        yield shards, volume, copies
        previous = current
        # Y_k's twins, for layer k + 1: kernel.twins finds the same classes in O(nnz)
        # (twin_classes' keys sort took most of the plan's time at 4096 neurons)
        twins = twin_outputs(csr).class_of


def plan_traffic(network: NetworkSource, owners: np.ndarray, workers: int,
                 on_layer: Callable[[int, list[LayerShard]], None] | None = None) -> CommPlan:
    """The plan's traffic and work; ``on_layer(k, shards)`` receives each layer's shards
    (to write them out) before they are dropped."""
    volume = np.zeros((network.depth, workers, workers), dtype=np.int64)
    copies = np.zeros_like(volume)
    work = np.zeros((network.depth, workers), dtype=np.int64)
    for k, (shards, layer_volume, layer_copies) in enumerate(
            plan_layers(network, owners, workers), start=1):
        volume[k - 1], copies[k - 1] = layer_volume, layer_copies
        work[k - 1] = [shard.weights.nnz for shard in shards]
        if on_layer is not None:
            on_layer(k, shards)
    return CommPlan(workers=workers, owners=owners, volume=volume, copies=copies, work=work)


def build_plan(network: NetworkSource, owners: np.ndarray, workers: int
               ) -> tuple[CommPlan, list[WorkerShard]]:
    """The plan and one shard per worker, in memory (small networks; large ones:
    :func:`write_shards`)."""
    fingerprint = network.fingerprint()
    per_worker: list[list[LayerShard]] = [[] for _ in range(workers)]

    def keep(_: int, shards: list[LayerShard]) -> None:
        for p, shard in enumerate(shards):
            per_worker[p].append(shard)

    plan = plan_traffic(network, owners, workers, keep)
    shard_list = [
        WorkerShard(p, workers, network.neurons, network.bias, fingerprint,
                    np.flatnonzero(owners[0] == p), tuple(per_worker[p]))
        for p in range(workers)
    ]
    return plan, shard_list


def write_shards(network: NetworkSource, owners: np.ndarray, workers: int,
                 path_of: Callable[[int], Path]) -> CommPlan:
    """Cut the shards straight into files, ``path_of(p)`` for worker p, layer by layer:
    each file is appended to as the plan walks the network, so no more than one layer
    of the model and of every shard is in memory. The files appear only if all are whole.
    """
    fingerprint = network.fingerprint()
    with ExitStack() as stack:
        writers = [stack.enter_context(BundleWriter(path_of(p))) for p in range(workers)]

        def append(k: int, shards: list[LayerShard]) -> None:
            for writer, shard in zip(writers, shards, strict=True):
                writer.add_arrays(_layer_arrays(k, shard))

        plan = plan_traffic(network, owners, workers, append)
        for p, writer in enumerate(writers):
            writer.add("input_columns", np.flatnonzero(owners[0] == p).astype(np.int64))
            writer.set_meta(_shard_meta(p, workers, network.neurons, network.bias,
                                        fingerprint, network.depth))
    return plan


def _layer_shard(csr: sp.csr_matrix, csc: sp.csc_matrix, previous_owner: np.ndarray,
                 previous: list[np.ndarray], outputs: np.ndarray, p: int) -> LayerShard:
    inputs = needed_inputs(csc, outputs)
    weights = csr[inputs][:, outputs]
    weights.sort_indices()
    source = previous_owner[inputs]
    local = np.flatnonzero(source == p)
    recv = {int(q): np.flatnonzero(source == q) for q in distinct(source) if q != p}
    return LayerShard(
        inputs=inputs,
        outputs=outputs,
        weights=sp.csr_matrix(weights),
        local_from=np.searchsorted(previous[p], inputs[local]),
        local_to=local,
        recv=recv,
    )


# ----------------------------------------------------------------------------- shard files


def _layer_arrays(k: int, layer: LayerShard) -> dict[str, np.ndarray]:
    arrays = {
        f"l{k}.inputs": layer.inputs.astype(np.int64),
        f"l{k}.outputs": layer.outputs.astype(np.int64),
        f"l{k}.local_from": layer.local_from.astype(np.int64),
        f"l{k}.local_to": layer.local_to.astype(np.int64),
        **pack_csr(f"l{k}.weights", layer.weights),
    }
    for q, positions in layer.recv.items():
        arrays[f"l{k}.recv.{q}"] = positions.astype(np.int64)
    for t, positions in layer.send.items():
        arrays[f"l{k}.send.{t}"] = positions.astype(np.int64)
    for q, columns in layer.expand.items():
        arrays[f"l{k}.expand.{q}"] = columns.astype(np.int64)
    return arrays


def _shard_meta(worker: int, workers: int, neurons: int, bias: float, model: str,
                depth: int) -> dict[str, Any]:
    return {"kind": "shard", "worker": worker, "workers": workers, "neurons": neurons,
            "bias": bias, "model": model, "depth": depth}


def save_shard(shard: WorkerShard, path: Path | str) -> None:
    """One binary bundle per worker, so a worker loads only its own slice of the model."""
    arrays: dict[str, np.ndarray] = {"input_columns": shard.input_columns.astype(np.int64)}
    for k, layer in enumerate(shard.layers, start=1):
        arrays.update(_layer_arrays(k, layer))
    write_bundle(path, _shard_meta(shard.worker, shard.workers, shard.neurons, shard.bias,
                                   shard.model, shard.depth), arrays)


def load_shard(path: Path | str, dtype: str | None = None) -> WorkerShard:
    """A worker's shard; InputFormatError naming the file for anything inconsistent."""
    meta, arrays = read_bundle(path)
    try:
        return _shard_from(path, meta, arrays, dtype)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise InputFormatError(path, f"incomplete or inconsistent shard ({exc!r})") from exc


def _shard_from(path: Path | str, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                dtype: str | None) -> WorkerShard:
    if meta.get("kind") != "shard":
        raise InputFormatError(path, f"holds a {meta.get('kind')!r}, not a shard")
    neurons, depth = int(meta["neurons"]), int(meta["depth"])
    if not 1 <= depth <= len(arrays) or not 1 <= neurons <= MAX_DIMENSION:
        raise ValueError(f"depth {depth} or neurons {neurons} is impossible")

    def ids(name: str) -> np.ndarray:  # neuron ids and positions are all below N
        return check_index_vector(path, name, arrays[name], neurons)

    # one pass over the names (l{k}.recv.{q}, l{k}.send.{t}, l{k}.expand.{q}): scanning
    # every name for every layer was quadratic in the depth (~10 s for 120 layers)
    peers: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for name in arrays:
        fields = name.split(".")
        if len(fields) == 3 and fields[1] in ("recv", "send", "expand"):
            peers.setdefault((int(fields[0][1:]), fields[1]), {})[int(fields[2])] = ids(name)
    layers = []
    for k in range(1, depth + 1):
        prefix = f"l{k}."
        recv, send, expand = (peers.get((k, kind), {}) for kind in ("recv", "send", "expand"))
        inputs, outputs = ids(prefix + "inputs"), ids(prefix + "outputs")
        if check_csr(path, prefix + "weights", arrays) != (inputs.size, outputs.size):
            raise ValueError(f"layer {k}: weights do not match its inputs and outputs")
        layers.append(LayerShard(
            inputs=inputs, outputs=outputs,
            weights=unpack_csr(prefix + "weights", arrays, dtype),
            local_from=ids(prefix + "local_from"), local_to=ids(prefix + "local_to"),
            recv=dict(sorted(recv.items())), send=dict(sorted(send.items())),
            expand=expand,
        ))
    bias = float(meta["bias"])
    if not np.isfinite(bias):
        raise ValueError(f"bias {bias} is not finite")
    return WorkerShard(int(meta["worker"]), int(meta["workers"]), neurons, bias,
                       str(meta["model"]), ids("input_columns"), tuple(layers))
