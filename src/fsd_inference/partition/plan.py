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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fsd_inference.kernel.twins import twin_outputs
from fsd_inference.model.binary import pack_csr, read_bundle, unpack_csr, write_bundle
from fsd_inference.model.network import Network


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
    keys = np.full((neurons, 2 * width + 1), -1.0)
    keys[:, 0] = fan_in
    keys[column, 1 + slot] = csc.indices
    keys[column, 1 + width + slot] = csc.data.astype(np.float64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    return np.asarray(inverse).ravel()


def needed_inputs(weights_csc: sp.csc_matrix, outputs: np.ndarray) -> np.ndarray:
    """Sorted ids of the rows (source neurons) with an edge into any of ``outputs``."""
    sub = weights_csc[:, outputs]
    return np.unique(sub.indices)


def build_plan(network: Network, owners: np.ndarray, workers: int
               ) -> tuple[CommPlan, list[WorkerShard]]:
    """The plan and one shard per worker, from the weights and the ownership alone.

    A worker that owns no neuron of a layer (more workers than neurons with work) simply
    idles through it: it has nothing to multiply, send or receive.
    """
    fingerprint = network.fingerprint()
    volume = np.zeros((network.depth, workers, workers), dtype=np.int64)
    copies = np.zeros_like(volume)
    per_worker: list[list[LayerShard]] = [[] for _ in range(workers)]
    previous = [np.flatnonzero(owners[0] == p) for p in range(workers)]
    for k, w in enumerate(network.layers, start=1):
        csc = w.tocsc()
        csr = sp.csr_matrix(w)
        current = [np.flatnonzero(owners[k] == p) for p in range(workers)]
        # equal ids = equal activations; kernel.twins finds the same classes in O(nnz)
        # (twin_classes' keys sort took most of the plan's time at 4096 neurons)
        twins = (twin_outputs(network.layers[k - 2]).class_of if k > 1
                 else twin_classes(None, network.neurons))
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
                copies[k - 1, q, p] = needed.size
                volume[k - 1, q, p] = representatives.size
                # the sender's view, as positions in its own outputs
                shards[q].send[p] = np.searchsorted(previous[q], representatives)
            per_worker[p].append(shard)
        previous = current
    plan = CommPlan(workers=workers, owners=owners, volume=volume, copies=copies)
    shard_list = [
        WorkerShard(p, workers, network.neurons, network.bias, fingerprint,
                    np.flatnonzero(owners[0] == p), tuple(per_worker[p]))
        for p in range(workers)
    ]
    return plan, shard_list


def _layer_shard(csr: sp.csr_matrix, csc: sp.csc_matrix, previous_owner: np.ndarray,
                 previous: list[np.ndarray], outputs: np.ndarray, p: int) -> LayerShard:
    inputs = needed_inputs(csc, outputs)
    weights = csr[inputs][:, outputs]
    weights.sort_indices()
    source = previous_owner[inputs]
    local = np.flatnonzero(source == p)
    recv = {int(q): np.flatnonzero(source == q) for q in np.unique(source) if q != p}
    return LayerShard(
        inputs=inputs,
        outputs=outputs,
        weights=sp.csr_matrix(weights),
        local_from=np.searchsorted(previous[p], inputs[local]),
        local_to=local,
        recv=recv,
    )


# ----------------------------------------------------------------------------- shard files


def save_shard(shard: WorkerShard, path: Path | str) -> None:
    """One binary bundle per worker, so a worker loads only its own slice of the model."""
    arrays: dict[str, np.ndarray] = {"input_columns": shard.input_columns.astype(np.int64)}
    for k, layer in enumerate(shard.layers, start=1):
        arrays[f"l{k}.inputs"] = layer.inputs.astype(np.int64)
        arrays[f"l{k}.outputs"] = layer.outputs.astype(np.int64)
        arrays[f"l{k}.local_from"] = layer.local_from.astype(np.int64)
        arrays[f"l{k}.local_to"] = layer.local_to.astype(np.int64)
        arrays.update(pack_csr(f"l{k}.weights", layer.weights))
        for q, positions in layer.recv.items():
            arrays[f"l{k}.recv.{q}"] = positions.astype(np.int64)
        for t, positions in layer.send.items():
            arrays[f"l{k}.send.{t}"] = positions.astype(np.int64)
        for q, columns in layer.expand.items():
            arrays[f"l{k}.expand.{q}"] = columns.astype(np.int64)
    meta = {"kind": "shard", "worker": shard.worker, "workers": shard.workers,
            "neurons": shard.neurons, "bias": shard.bias, "model": shard.model,
            "depth": shard.depth}
    write_bundle(path, meta, arrays)


def load_shard(path: Path | str, dtype: str | None = None) -> WorkerShard:
    meta, arrays = read_bundle(path)
    # one pass over the names (l{k}.recv.{q}, l{k}.send.{t}, l{k}.expand.{q}): scanning
    # every name for every layer was quadratic in the depth (~10 s for 120 layers)
    peers: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for name, array in arrays.items():
        fields = name.split(".")
        if len(fields) == 3 and fields[1] in ("recv", "send", "expand"):
            peers.setdefault((int(fields[0][1:]), fields[1]), {})[int(fields[2])] = array
    layers = []
    for k in range(1, meta["depth"] + 1):
        prefix = f"l{k}."
        recv, send, expand = (peers.get((k, kind), {}) for kind in ("recv", "send", "expand"))
        layers.append(LayerShard(
            inputs=arrays[prefix + "inputs"], outputs=arrays[prefix + "outputs"],
            weights=unpack_csr(prefix + "weights", arrays, dtype),
            local_from=arrays[prefix + "local_from"], local_to=arrays[prefix + "local_to"],
            recv=dict(sorted(recv.items())), send=dict(sorted(send.items())),
            expand=expand,
        ))
    return WorkerShard(int(meta["worker"]), int(meta["workers"]), int(meta["neurons"]),
                       float(meta["bias"]), str(meta["model"]), arrays["input_columns"],
                       tuple(layers))
