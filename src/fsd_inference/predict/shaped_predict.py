"""One prediction of a data, pipeline or ``groups x stages`` hybrid run, with its cost.

:func:`predict_shape` takes a :class:`~fsd_inference.predict.trace.Trace` (one reference
pass, shared by every candidate the planner ranks), lays the shape out as the Plan step
would (blocks, Map mode), builds its task graph (:mod:`.shaped`), samples it with the
same engine and service model as ``fsd predict``'s neuron runs, and prices it with the
same items and price table (cost.py): Lambda GB-seconds of every invocation (idle time
included: a later pipeline stage is billed while it waits for its first micro-batch),
requests, the channel's calls (the sends exact, the receives modelled), the storage calls
around them and the state transitions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsd_inference.channels import ChannelConfig
from fsd_inference.channels.sqs import MAX_BATCH_ENTRIES
from fsd_inference.cloud.history import state_transitions
from fsd_inference.cost import estimate_cost, load_prices
from fsd_inference.predict.engine import DEFAULT_DRAWS, Simulation, simulate
from fsd_inference.predict.neuron import cpu_factor
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.predictor import (
    BUCKET,
    CLEANUP_MEMORY_MB,
    EXECUTION_ID,
    GATHER_MEMORY_MB,
    PLAN_MEMORY_MB,
    PredictOptions,
    step_work,
)
from fsd_inference.predict.shaped import (
    Layout,
    ShapedGraph,
    build_shaped_graph,
    layout_of,
    storage_of,
)
from fsd_inference.predict.trace import BlockKey, Trace
from fsd_inference.predict.wire import GET, PUT, WireOptions
from fsd_inference.strategy.memory import task_memory_mb
from fsd_inference.strategy.shape import Shape

SQS_BILLING = 64 * 1024


@dataclass(frozen=True)
class ShapeOptions:
    channel: str = "queue"
    memory_mb: int = 2048
    arch: str = "arm64"
    message_limit: int = ChannelConfig.max_message_bytes
    layers_per_block: int | None = None
    draws: int = DEFAULT_DRAWS
    seed: int = 0
    execution: str = EXECUTION_ID
    bucket: str = BUCKET
    region: str | None = None


@dataclass
class ShapedPrediction:
    shape: Shape
    options: ShapeOptions
    built: ShapedGraph
    simulation: Simulation
    memory_needed_mb: float
    invocations: np.ndarray  # (tasks, blocks) mean billed seconds
    cost: dict[str, Any]
    api_calls: Counter[str]

    @property
    def layout(self) -> Layout:
        return self.built.layout

    def quantile(self, q: float) -> float:
        return self.simulation.quantile(q)


def wanted_blocks(shape: Shape, batch: int) -> list[BlockKey]:
    """The boundary blocks a trace must encode to predict ``shape``."""
    return layout_of(shape, batch).boundary_keys()


def shape_memory_mb(trace: Trace, shape: Shape) -> float:
    """Memory the largest task needs (the Plan step's check, strategy/memory.py)."""
    edges = max(int(trace.layer_edges[s.first - 1:s.last].sum()) for s in shape.stages)
    return task_memory_mb(shape, trace.neurons, edges, trace.batch, trace.dtype)


def _invocations(sim: Simulation, layout: Layout, model: ServiceModel) -> np.ndarray:
    overhead = (model.latency("stepfunctions.block_overhead").mean
                + model.latency("stepfunctions.distributed_child"
                                if layout.map_mode == "distributed"
                                else "stepfunctions.lambda_task").mean)
    steps = len(sim.gate)
    blocks = len(layout.blocks()) if layout.stages == 1 else 1
    out = np.zeros((layout.tasks, blocks))
    for b in range(blocks):
        last = b if layout.stages == 1 else steps - 1
        gate = sim.before if b == 0 else float(sim.gate[b])
        out[:, b] = np.maximum(sim.timeline.end[:, last] - gate - overhead, 0.0)
    return out


def _api_calls(built: ShapedGraph, sim: Simulation, channel: str, shard_miss: float
               ) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(worker calls, their billed SQS requests, the Plan/Gather/Cleanup steps' calls)."""
    layout, storage = built.layout, built.storage
    tasks, blocks = layout.tasks, storage.start.shape[0]
    exchanges = layout.stages > 1
    calls: Counter[str] = Counter()
    billed: Counter[str] = Counter()
    calls[GET] += round(tasks + sum(1 for t in range(tasks) if layout.stage(t) == 0)
                        + (blocks - 1) * tasks * (1 + shard_miss))
    calls[PUT] += int(tasks * blocks + np.count_nonzero(storage.checkpoint))
    calls["S3.HeadObject"] += tasks * blocks
    for wire in built.wires:
        for api, count in (*wire.send_calls.items(), *wire.receive_calls.items()):
            calls[api] += round(float(count.sum()))
        for api, count in wire.billed.items():
            billed[api] += round(float(count.sum()))
    if exchanges and channel == "queue":
        calls["SQS.GetQueueUrl"] += tasks
        billed["SQS.GetQueueUrl"] += tasks
        received = sum(float(w.up_bytes.sum()) for w in built.wires)
        calls["SQS.ReceiveMessage"] += round(float((sim.calls + sim.empty).sum()))
        # the queue channel deletes in batches of ten (the rest when the block ends), and a
        # shape that exchanges runs in one block: ceil(messages each task reads / 10)
        inbox = np.bincount(np.concatenate([t.dst for t in built.traffic]), minlength=tasks)
        deletes = int(np.ceil(inbox / MAX_BATCH_ENTRIES).sum())
        calls["SQS.DeleteMessageBatch"] += deletes
        billed["SQS.ReceiveMessage"] += round(max(float(sim.calls.sum()),
                                                  received / SQS_BILLING)
                                              + float(sim.empty.sum()))
        billed["SQS.DeleteMessageBatch"] += deletes
    elif exchanges:
        calls[GET] += round(float(sim.empty.sum()))  # probes that found nothing
    width, groups = layout.shape.width, layout.shape.groups
    outside: Counter[str] = Counter({GET: 2 + groups + 1, PUT: width + groups + 4,
                                     "S3.HeadObject": 2, "S3.ListObjectsV2": 2})
    if exchanges and channel == "queue":
        outside["SQS.CreateQueue"] = tasks
        outside["SQS.DeleteQueue"] = tasks
    return calls, billed, outside


def predict_shape(trace: Trace, shape: Shape, options: ShapeOptions, model: ServiceModel,
                  loaded_bytes: float = 0.0, load_cpu_s: float = 0.0) -> ShapedPrediction:
    """Predict one run of ``shape`` (one part per stage) from ``trace``."""
    if any(stage.parts != 1 for stage in shape.stages):
        raise ValueError(f"{shape.describe()}: the shaped builder takes one part per stage")
    layout = layout_of(shape, trace.batch, options.layers_per_block)
    storage = storage_of(trace, layout)
    channel = options.channel if layout.stages > 1 else "none"
    cpu = cpu_factor(model, options.memory_mb)
    blocks = storage.start.shape[0]
    before, after = step_work(model, PredictOptions(workers=layout.tasks, channel=channel),
                              storage, load_cpu_s, 0.0, blocks, loaded_bytes)
    wire_options = WireOptions(options.message_limit, options.execution, options.bucket)
    built = build_shaped_graph(trace, layout, options.channel, model, cpu, wire_options,
                               before, after, storage)
    sim = simulate(built.graph, model, draws=options.draws, seed=options.seed)
    invocations = _invocations(sim, layout, model)
    calls, billed, outside = _api_calls(built, sim, channel,
                                        model.value("lambda.shard_cache_miss"))
    document = {
        "lambda": {
            "plan": {"invocations": 1, "seconds": sim.before, "memory_mb": PLAN_MEMORY_MB},
            "worker": {"invocations": layout.tasks * blocks,
                       "seconds": float(invocations.sum()), "memory_mb": options.memory_mb},
            "gather": {"invocations": 1, "seconds": sim.after / 2,
                       "memory_mb": GATHER_MEMORY_MB},
            "cleanup": {"invocations": 1, "seconds": sim.after / 2,
                        "memory_mb": CLEANUP_MEMORY_MB}},
        "summary": {"api_calls": dict(calls), "billed_requests": dict(billed)},
        "api_calls_outside_workers": dict(outside),
    }
    cost = estimate_cost(document, options.memory_mb, options.arch,
                         state_transitions(layout.tasks, blocks), load_prices(options.region))
    return ShapedPrediction(shape, options, built, sim, shape_memory_mb(trace, shape),
                            invocations, cost, calls + outside)
