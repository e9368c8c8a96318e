"""Builder: data, pipeline and ``groups x stages`` hybrid shapes as task graphs.

These shapes have one part per stage (strategy/shape.py), so a task exchanges nothing
inside its stage. Tasks are numbered as the run numbers them, ``group * stages + stage``.

- One stage (``data``, or hybrid with ``--stages 1``): the Plan step's blocks, as in
  ``fsd run``: each graph step is a block of ``layers_per_block`` layers on the task's
  rows, ending with its checkpoint; the next block starts after the Map's barrier with
  new invocations that read the checkpoint (and the shard again when the container was
  not reused).
- Several stages: one block (the Plan step runs a pipeline in one, all stages at once).
  Graph step ``i`` of stage ``s`` computes micro-batch ``i - s`` (its layers on those
  rows, after decoding the block received from stage ``s - 1``) and first sends stage
  ``s + 1`` the block of micro-batch ``i - 1 - s``: the worker's part-major order, where
  a stage encodes and sends a micro-batch's activations right after computing them and
  then waits for its next micro-batch. ``M + S - 1`` steps in all.

Every task starts by loading its slot's shard: the weights of its layer range, from S3
at one connection's modelled bandwidth (the shard's size: index arrays per layer, the
plan's column maps; Graph Challenge weights are one constant, stored once). Compute is
the kernel time of the trace scaled by the task's rows' share of each layer's
multiply-adds, times the CPU factor of the function's memory (neuron.py's model).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fsd_inference.channels.sqs import SEND_THREADS
from fsd_inference.cloud.history import MapMode, min_layers_per_block
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.model.binary import index_dtype
from fsd_inference.predict.counts import LayerTraffic
from fsd_inference.predict.graph import Jobs, Messages, Step, TaskGraph, Work
from fsd_inference.predict.neuron import (
    StorageBytes,
    calls_work,
    exchange,
    invoke_latency,
    receiver_for,
)
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.predictor import csr_bytes
from fsd_inference.predict.trace import BlockKey, Trace
from fsd_inference.predict.wire import GET, PUT, WIRES, LayerWire, WireOptions
from fsd_inference.strategy.shape import Shape


@dataclass(frozen=True)
class Layout:
    """Where a shape's tasks sit: rows, layers, micro-batches, blocks. Rows are
    positions in the batch order (strategy/shape.py), as the trace's are."""

    shape: Shape
    batch: int
    layers_per_block: int
    map_mode: MapMode

    @property
    def stages(self) -> int:
        return len(self.shape.stages)

    @property
    def tasks(self) -> int:
        return self.shape.tasks

    def rows(self, task: int) -> tuple[int, int]:
        return self.shape.group_rows(task // self.stages, self.batch)

    def stage(self, task: int) -> int:
        return task % self.stages

    def microbatches(self, task: int) -> list[tuple[int, int]]:
        return self._microbatches[task // self.stages]

    @cached_property
    def _microbatches(self) -> list[list[tuple[int, int]]]:
        """Absolute row ranges of every group's micro-batches."""
        out = []
        for group in range(self.shape.groups):
            a, b = self.shape.group_rows(group, self.batch)
            bounds = a + self.shape.microbatch_bounds(b - a)
            out.append([(int(x), int(y)) for x, y in itertools.pairwise(bounds)])
        return out

    def blocks(self) -> list[tuple[int, int]]:
        """1-based ``(first, last)`` layers of every block (one block with stages)."""
        depth, per = self.shape.depth, self.layers_per_block
        return [(b + 1, min(depth, b + per)) for b in range(0, depth, per)]

    def boundary_keys(self) -> list[BlockKey]:
        """The blocks stages send each other: (last layer of the stage, rows)."""
        keys: list[BlockKey] = []
        for task in range(self.tasks):
            s = self.stage(task)
            if s < self.stages - 1:
                last = self.shape.stages[s].last
                keys.extend((last, a, b) for a, b in self.microbatches(task))
        return keys


def layout_of(shape: Shape, batch: int, layers_per_block: int | None = None,
              settings: CloudSettings | None = None) -> Layout:
    """Blocks and Map mode as the Plan step chooses them (choose_layers_per_block)."""
    settings = settings or CloudSettings()
    mode: MapMode = "inline" if shape.tasks <= settings.inline_map_limit else "distributed"
    if len(shape.stages) > 1:
        per = shape.depth
    else:
        needed = min_layers_per_block(shape.depth, shape.tasks, mode)
        per = min(shape.depth, max(layers_per_block or settings.layers_per_block, needed))
    return Layout(shape, batch, per, mode)


def stage_shard_bytes(trace: Trace, first: int, last: int) -> float:
    """Size of a one-part stage's shard (save_shard's arrays, as predictor.shard_bytes
    counts them): per layer the weights' CSR indices and the column maps."""
    n = trace.neurons
    total = 8.0 * n  # input columns
    for edges in trace.layer_edges[first - 1:last]:
        total += 8.0 * 4 * n  # inputs, outputs, local_from, local_to
        total += (n + 1) * index_dtype(int(edges)).itemsize
        total += int(edges) * index_dtype(max(n - 1, 0)).itemsize + 8
    return total


def storage_of(trace: Trace, layout: Layout) -> StorageBytes:
    """Shard, block-start and checkpoint bytes per task (uncompressed: an upper bound)."""
    itemsize = np.dtype(trace.dtype).itemsize
    blocks = layout.blocks()
    shard = np.zeros(layout.tasks)
    start = np.zeros((len(blocks), layout.tasks))
    checkpoint = np.zeros_like(start)
    for task in range(layout.tasks):
        stage = layout.shape.stages[layout.stage(task)]
        shard[task] = stage_shard_bytes(trace, stage.first, stage.last)
        a, b = layout.rows(task)
        for index, (first, last) in enumerate(blocks):
            if first >= stage.first:  # it starts from Y_{first - 1}: input or checkpoint
                start[index, task] = csr_bytes(b - a, trace.neurons,
                                               trace.nnz(first - 1, (a, b)), itemsize)
            if last == stage.last or len(blocks) > 1:  # it writes Y_last
                checkpoint[index, task] = csr_bytes(b - a, trace.neurons,
                                                    trace.nnz(last, (a, b)), itemsize)
    return StorageBytes(shard, start, checkpoint)


def boundary_traffic(trace: Trace, layout: Layout, step: int) -> LayerTraffic:
    """The blocks sent in pipeline step ``step``: stage s sends micro-batch step - 1 - s."""
    fields: dict[str, list[float]] = {k: [] for k in ("src", "dst", "frames", "frame_bytes",
                                                       "last_frame", "rows", "encode_s")}
    for task in range(layout.tasks):
        s, m = layout.stage(task), step - 1 - layout.stage(task)
        if s == layout.stages - 1 or not 0 <= m < layout.shape.microbatches:
            continue
        a, b = layout.microbatches(task)[m]
        block = trace.blocks[(layout.shape.stages[s].last, a, b)]
        for name, value in (("src", task), ("dst", task + 1), ("frames", block.frames),
                            ("frame_bytes", block.frame_bytes),
                            ("last_frame", block.last_frame), ("rows", block.rows),
                            ("encode_s", block.encode_s)):
            fields[name].append(value)
    ints = {k: np.asarray(v, dtype=np.int64) for k, v in fields.items() if k != "encode_s"}
    return LayerTraffic(**ints, encode_s=np.asarray(fields["encode_s"], dtype=np.float64))


def _decode_s(trace: Trace, layout: Layout, task: int, m: int) -> float:
    s = layout.stage(task)
    if s == 0:
        return 0.0
    a, b = layout.microbatches(task)[m]
    return trace.blocks[(layout.shape.stages[s - 1].last, a, b)].decode_s


def _empty_exchange(tasks: int) -> tuple[Jobs, Messages]:
    none = np.zeros(0, dtype=np.int64)
    return (Jobs(none, np.zeros(0), Work(np.zeros(0))),
            Messages(none, none, Work(np.zeros(0)), np.zeros(0)))


@dataclass(frozen=True)
class ShapedGraph:
    graph: TaskGraph
    layout: Layout
    storage: StorageBytes
    traffic: list[LayerTraffic]  # per graph step (empty for one-stage shapes)
    wires: list[LayerWire]


def build_shaped_graph(trace: Trace, layout: Layout, channel: str, model: ServiceModel,
                       cpu: float, wire_options: WireOptions, before: Work, after: Work,
                       storage: StorageBytes) -> ShapedGraph:
    """The task graph of a shape with one part per stage (see the module docstring)."""
    tasks = layout.tasks
    queue = np.full(tasks, 1.0 if channel == "queue" and layout.stages > 1 else 0.0)
    invoke = invoke_latency(layout.map_mode)
    shard_miss = model.value("lambda.shard_cache_miss")
    wire_kind = WIRES[channel]()
    steps: list[Step] = []
    traffic: list[LayerTraffic] = []
    wires: list[LayerWire] = []
    none_jobs, none_messages = _empty_exchange(tasks)

    def checkpoint(index: int) -> Work:  # metrics, and activations where it owns them
        puts = 1.0 + (storage.checkpoint[index] > 0)
        return calls_work(model, {PUT: puts, "S3.HeadObject": np.ones(tasks)}, cpu, tasks,
                          storage.checkpoint[index])

    if layout.stages == 1:
        for index, (first, last) in enumerate(layout.blocks()):
            post = np.array([trace.compute_s(first, last, layout.rows(t)) for t in range(tasks)])
            barrier = None
            if index > 0:
                load = calls_work(model, {GET: np.full(tasks, 1.0 + shard_miss)}, cpu, tasks,
                                  storage.start[index] + storage.shard * shard_miss)
                barrier = Work(load.seconds, (("stepfunctions.block_overhead", np.ones(tasks)),
                                              (invoke, np.ones(tasks)), *load.calls),
                               load.bytes)
            steps.append(Step(Work.zero(tasks), Work.zero(tasks), Work(post * cpu), none_jobs,
                              none_messages, flush=True, tail=checkpoint(index),
                              barrier=barrier))
    else:
        count = layout.shape.microbatches + layout.stages - 1
        for i in range(count):
            post = np.zeros(tasks)
            for t in range(tasks):
                s = layout.stage(t)
                m = i - s
                if 0 <= m < layout.shape.microbatches:
                    stage = layout.shape.stages[s]
                    rows = layout.microbatches(t)[m]
                    post[t] = trace.compute_s(stage.first, stage.last, rows) + _decode_s(
                        trace, layout, t, m)
            sent = boundary_traffic(trace, layout, i)
            wire = wire_kind.account(layout.shape.stages[0].last, sent, wire_options)
            # decoding is in the receiver's post (its micro-batch's decode_s)
            encode, jobs, messages = exchange(sent, wire, wire_kind.receive_latency_apis,
                                              model, cpu, np.zeros(sent.src.size))
            pre = np.bincount(sent.src, weights=encode, minlength=tasks)
            traffic.append(sent)
            wires.append(wire)
            steps.append(Step(Work(pre), Work.zero(tasks), Work(post * cpu), jobs, messages,
                              flush=i == count - 1,
                              tail=checkpoint(0) if i == count - 1 else None))
    first_stage = np.array([1.0 if layout.stage(t) == 0 else 0.0 for t in range(tasks)])
    load = calls_work(model, {GET: 1.0 + first_stage, "SQS.GetQueueUrl": queue}, cpu, tasks,
                      storage.shard + storage.start[0])
    launch = Work(load.seconds, (("stepfunctions.block_overhead", np.ones(tasks)),
                                 (invoke, np.ones(tasks)), ("lambda.cold_start", np.ones(tasks)),
                                 *load.calls), load.bytes)
    graph = TaskGraph(tasks, tuple(steps), receiver_for(channel, model, cpu), SEND_THREADS,
                      model.value("network.connection_bytes_per_s"), launch, before, after,
                      {"strategy": layout.shape.strategy, "channel": channel})
    return ShapedGraph(graph, layout, storage, traffic, wires)
