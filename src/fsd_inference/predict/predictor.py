"""One prediction end to end: plan, exact counts, the run's task graph, its simulation.

:func:`predict` is what ``fsd predict`` calls: it partitions (or reuses the cached
partition), builds the communication plan and shards exactly as ``fsd run``'s Plan step
does, counts everything the workers would send (:mod:`.counts`, :mod:`.wire`), sizes
the storage traffic around the exchange, builds the task graph of the execution
(:mod:`.neuron`) and samples it (:mod:`.engine`). The returned :class:`Prediction`
holds all of it; :mod:`.document` turns it into the metrics-shaped JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from fsd_inference.cloud.history import MapMode, min_layers_per_block
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.model.binary import index_dtype
from fsd_inference.model.network import Network
from fsd_inference.partition.cache import ownership
from fsd_inference.partition.plan import CommPlan, WorkerShard, build_plan
from fsd_inference.predict.contention import contended, fixed_point
from fsd_inference.predict.counts import Counts, count_run
from fsd_inference.predict.engine import DEFAULT_DRAWS, Simulation, simulate
from fsd_inference.predict.graph import TaskGraph, Work
from fsd_inference.predict.neuron import (
    Deployment,
    StorageBytes,
    build_graph,
    calls_work,
    cpu_factor,
)
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.wire import GET, PUT, WIRES, LayerWire, Wire, WireOptions

# template.yaml's memory per function (the workers': the WorkerMemory parameter)
PLAN_MEMORY_MB = 4096
GATHER_MEMORY_MB = 3008
CLEANUP_MEMORY_MB = 1024
STEP_THREADS = 8  # the plan / gather / cleanup steps' upload and download threads
# An execution id shaped like fsd run's (its length is in every frame header).
EXECUTION_ID = "fsd-20260101-000000-000000"
BUCKET = "fsd-inference-bucket-0123456789ab"  # CloudFormation-style name (spill pointers)


@dataclass(frozen=True)
class PredictOptions:
    workers: int
    channel: str = "queue"
    memory_mb: int = 2048
    arch: str = "arm64"
    message_limit: int = 1024 * 1024
    partition: str = "hypergraph"
    seed: int = 0
    dtype: str = "float64"
    layers_per_block: int | None = None
    draws: int = DEFAULT_DRAWS
    execution: str = EXECUTION_ID
    bucket: str = BUCKET
    partition_cached: bool = True  # the bucket holds the partition (plans/): no partitioning


@dataclass
class Prediction:
    options: PredictOptions
    deployment: Deployment
    model: ServiceModel
    network_neurons: int
    counts: Counts
    wires: list[LayerWire]
    wire: Wire
    storage: StorageBytes
    graph: TaskGraph
    simulation: Simulation
    plan: CommPlan
    seconds: dict[str, float] = field(default_factory=dict)  # how long predicting took


def resolve_deployment(options: PredictOptions, depth: int,
                       settings: CloudSettings | None = None) -> Deployment:
    """Map mode and layers per block as the Plan step would choose them."""
    settings = settings or CloudSettings()
    mode: MapMode = "inline" if options.workers <= settings.inline_map_limit else "distributed"
    needed = min_layers_per_block(depth, options.workers, mode)
    per_block = min(depth, max(options.layers_per_block or settings.layers_per_block, needed))
    return Deployment(options.workers, options.channel, options.memory_mb, options.arch,
                      options.message_limit, per_block, mode)


def csr_bytes(rows: int, cols: int, nnz: int, itemsize: int) -> float:
    """Uncompressed size of pack_csr's arrays plus the column ids (activation bundles)."""
    return float((rows + 1) * index_dtype(nnz).itemsize
                 + nnz * (index_dtype(max(cols - 1, 0)).itemsize + itemsize) + 8 * cols)


def shard_bytes(shard: WorkerShard) -> float:
    """Uncompressed size of a worker's shard bundle (save_shard's arrays)."""
    total = 8 * shard.input_columns.size
    for layer in shard.layers:
        total += 8 * (layer.inputs.size + layer.outputs.size + layer.local_from.size
                      + layer.local_to.size)
        total += 8 * sum(v.size for part in (layer.recv, layer.send, layer.expand)
                         for v in part.values())
        w = layer.weights
        total += (w.shape[0] + 1) * index_dtype(w.nnz).itemsize
        total += w.nnz * index_dtype(max(w.shape[1] - 1, 0)).itemsize + 8
    return float(total)


def storage_bytes(counts: Counts, shards: list[WorkerShard], inputs: sp.csr_matrix,
                  owners: np.ndarray, deployment: Deployment) -> StorageBytes:
    """Shard, block-start and checkpoint sizes per worker (uncompressed: an upper bound)."""
    itemsize = np.dtype(counts.dtype).itemsize
    columns = np.vstack([np.bincount(owners[k], minlength=counts.workers)
                         for k in range(owners.shape[0])])
    input_nnz = np.bincount(owners[0], weights=np.diff(sp.csc_matrix(inputs).indptr),
                            minlength=counts.workers)
    blocks = deployment.blocks(counts.depth)
    start = np.zeros((len(blocks), counts.workers))
    checkpoint = np.zeros_like(start)
    for b, (first, last) in enumerate(blocks):
        nnz = input_nnz if first == 0 else counts.output_nnz[first - 1]
        start[b] = [csr_bytes(counts.batch, int(c), int(n), itemsize)
                    for c, n in zip(columns[first], nnz, strict=True)]
        checkpoint[b] = [csr_bytes(counts.batch, int(c), int(n), itemsize)
                         for c, n in zip(columns[last + 1], counts.output_nnz[last], strict=True)]
    return StorageBytes(np.array([shard_bytes(s) for s in shards]), start, checkpoint)


def _rounds(n: int) -> float:
    return float(-(-n // STEP_THREADS))


def step_work(model: ServiceModel, options: PredictOptions, storage: StorageBytes,
              plan_cpu_s: float, gather_cpu_s: float, blocks: int, loaded_bytes: float
              ) -> tuple[Work, Work]:
    """The Plan step before the first block, Gather and Cleanup after the last."""
    p = options.workers
    queue = 1.0 if options.channel == "queue" else 0.0
    plan = calls_work(model, {GET: 2.0, "S3.HeadObject": 2.0, PUT: _rounds(2 * p) + 2.0,
                              "SQS.CreateQueue": _rounds(p) * queue}, cpu_factor(
        model, PLAN_MEMORY_MB), 1, np.array([loaded_bytes + float(
            storage.shard.sum() + storage.start[0].sum()) / min(STEP_THREADS, 2 * p)]))
    before = Work(plan.seconds + plan_cpu_s * cpu_factor(model, PLAN_MEMORY_MB), (
        ("stepfunctions.lambda_task", np.ones(1)), ("lambda.cold_start", np.ones(1)),
        ("stepfunctions.transition", np.ones(1)), *plan.calls), plan.bytes)
    gather = calls_work(model, {GET: _rounds(p) + _rounds(p * blocks) + 1.0, PUT: 2.0,
                                "SQS.DeleteQueue": _rounds(p) * queue,
                                "S3.ListObjectsV2": 2.0}, cpu_factor(model, GATHER_MEMORY_MB),
                        1, np.array([float(storage.checkpoint[-1].sum()) / min(STEP_THREADS,
                                                                                 p)]))
    after = Work(gather.seconds + gather_cpu_s * cpu_factor(model, GATHER_MEMORY_MB), (
        ("stepfunctions.lambda_task", np.full(1, 2.0)), ("lambda.cold_start", np.full(1, 2.0)),
        ("stepfunctions.transition", np.full(1, 3.0)), *gather.calls), gather.bytes)
    return before, after


def predict(network: Network, inputs: sp.csr_matrix, options: PredictOptions,
            model: ServiceModel, loaded_bytes: float = 0.0, load_cpu_s: float = 0.0
            ) -> Prediction:
    """Predict one ``fsd run`` (see the module docstring). ``loaded_bytes`` / ``load_cpu_s``:
    the model and input files' size and this machine's CPU seconds to parse them (the Plan
    step downloads and parses the same)."""
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    owned = ownership(network, options.partition, options.workers, options.seed)
    seconds["partition_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    cpu_tick = time.process_time()
    plan, shards = build_plan(network, owned.owners, options.workers)
    plan_cpu = time.process_time() - cpu_tick + load_cpu_s
    if not options.partition_cached:
        plan_cpu += owned.seconds
    seconds["plan_s"] = time.perf_counter() - tick
    deployment = resolve_deployment(options, network.depth)
    wire = WIRES[options.channel]()
    wire_options = WireOptions(options.message_limit, options.execution, options.bucket)
    tick = time.perf_counter()
    counts = count_run(network, inputs, owned.owners, plan, shards, options.dtype,
                       options.execution, wire.chunk_limit(wire_options))
    seconds["count_s"] = time.perf_counter() - tick
    wires = [wire.account(k, traffic, wire_options)
             for k, traffic in enumerate(counts.layers, start=1)]
    storage = storage_bytes(counts, shards, inputs, owned.owners, deployment)
    blocks = len(deployment.blocks(network.depth))
    gather_cpu = float(counts.output_nnz[-1].sum()) * counts.assemble_s_per_nnz
    graphs: list[TaskGraph] = []

    def run(service: ServiceModel) -> Simulation:
        first, last = step_work(service, options, storage, plan_cpu, gather_cpu, blocks,
                                loaded_bytes)
        graphs.append(build_graph(counts, wires, wire, service, deployment, storage, first,
                                  last))
        return simulate(graphs[-1], service, draws=options.draws, seed=options.seed)

    tick = time.perf_counter()
    if contended(model):
        exact = sum(float(sum(c.sum() for c in w.send_calls.values())
                          + sum(c.sum() for c in w.receive_calls.values())) for w in wires)
        around = float(options.workers * blocks * 6 + 4 * options.workers)

        def calls(simulation: Simulation) -> float:
            return exact + around + float((2 * simulation.calls + simulation.empty).sum())

        cpu = float(counts.compute_s().sum() + sum(t.encode_s.sum() for t in counts.layers)
                    + sum(counts.decode_s(t).sum() for t in counts.layers))
        simulation, factors = fixed_point(model, run, calls, cpu)
        seconds.update(factors)
    else:
        simulation = run(model)
    seconds["simulate_s"] = time.perf_counter() - tick
    return Prediction(options, deployment, model, network.neurons, counts, wires, wire,
                      storage, graphs[-1], simulation, plan, seconds)
