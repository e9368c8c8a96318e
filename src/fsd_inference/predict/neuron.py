"""Builder: today's neuron strategy (``fsd run``) as a task graph for the time model.

Tasks are the P Lambda workers; steps are the layers. Per layer, worker p encodes its
blocks on its main thread (CPU measured while counting), hands each to its sender
threads (one delivery per target: SendMessageBatch, or PUT + pointer when spilled; one
PUT per object on the object channel), collects its sources' blocks (long polling SQS,
or probing S3 with backoff) and multiplies (its share of the kernel's measured time,
plus assembling its input). Every ``layers_per_block`` layers the Map ends: each worker
flushes its sends, writes its checkpoint and metrics, and the next block starts when the
slowest worker is done, with new invocations that read shard and checkpoint.

CPU seconds measured on this machine (kernel, codec, SDK calls) are scaled to a Lambda:
``compute.lambda_core_per_host_core`` over the vCPU share of the function's memory
(1,769 MB = 1 vCPU; the worker is one Python process, so at most one core counts). CPU
is serial on a worker: a send's SDK work follows the encoding and the sends before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fsd_inference.channels.s3 import FETCH_THREADS, POLL_FIRST_S, POLL_MAX_S
from fsd_inference.channels.sqs import SEND_THREADS
from fsd_inference.cloud.history import MapMode
from fsd_inference.predict.counts import Counts, LayerTraffic
from fsd_inference.predict.graph import Jobs, Messages, Receiver, Step, TaskGraph, Work
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.wire import GET, PUT, SEND, LayerWire, Wire

# Which service-model entry (latency and SDK CPU) an API call takes.
API_LATENCY: dict[str, str] = {
    SEND: "sqs.send",
    PUT: "s3.put",
    GET: "s3.get",
    "S3.HeadObject": "s3.head",
    "S3.ListObjectsV2": "s3.list",
    "SQS.ReceiveMessage": "sqs.receive",
    "SQS.DeleteMessageBatch": "sqs.delete",
    "SQS.GetQueueUrl": "sqs.send",
    "SQS.CreateQueue": "sqs.send",
    "SQS.DeleteQueue": "sqs.send",
}
RECEIVE_WAIT_S = 1.0  # ChannelConfig.poll_s: the longest single long poll of a waiting worker


@dataclass(frozen=True)
class Deployment:
    """The run to predict, as ``fsd run`` would make it."""

    workers: int
    channel: str
    memory_mb: int
    arch: str
    message_limit: int
    layers_per_block: int
    map_mode: MapMode

    def blocks(self, depth: int) -> list[tuple[int, int]]:
        """0-based ``(first, last)`` step of every block."""
        per = self.layers_per_block
        return [(b, min(depth, b + per) - 1) for b in range(0, depth, per)]


@dataclass(frozen=True)
class StorageBytes:
    """Bytes each worker moves to and from S3 around the exchange (modelled sizes)."""

    shard: np.ndarray  # (P,) its shard
    start: np.ndarray  # (B, P) the activations it starts a block from (input, checkpoint)
    checkpoint: np.ndarray  # (B, P) what it writes at the block's end


def cpu_factor(model: ServiceModel, memory_mb: int) -> float:
    """Lambda seconds per second of one core of this machine for single-threaded code."""
    share = min(memory_mb / model.value("lambda.mb_per_vcpu"), model.value("lambda.max_vcpu"))
    return model.value("compute.lambda_core_per_host_core") / min(1.0, share)


def grouped_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sums within runs of equal (sorted) ``groups``, inclusive."""
    total = np.cumsum(values)
    if not values.size:
        return total
    first = np.flatnonzero(np.r_[True, np.diff(groups) != 0])
    offsets = np.repeat(np.r_[0.0, total[first[1:] - 1]], np.diff(np.r_[first, values.size]))
    return np.asarray(total - offsets)


def calls_work(model: ServiceModel, calls: Mapping[str, np.ndarray | float], cpu: float, n: int,
               payload: np.ndarray | None = None) -> Work:
    """API calls as Work: their latencies plus their SDK CPU (scaled by ``cpu``)."""
    seconds = np.zeros(n)
    sampled = []
    for api, count in calls.items():
        count = np.broadcast_to(np.asarray(count, dtype=np.float64), (n,))
        if not count.any():
            continue
        name = API_LATENCY.get(api, api)
        seconds = seconds + model.client_cpu(name, count) * cpu
        sampled.append((name, count))
    return Work(seconds, tuple(sampled), payload)


def exchange(traffic: LayerTraffic, wire: LayerWire, receive_apis: frozenset[str],
             model: ServiceModel, cpu: float, decode_s: np.ndarray
             ) -> tuple[np.ndarray, Jobs, Messages]:
    """One step's messages: the sender's CPU per message (encoding, scaled), its jobs
    (released as its main thread gets through encoding and the SDK's CPU of each call,
    in order) and the messages with the receiver's I/O and CPU (``decode_s`` here)."""
    n = traffic.src.size
    encode = traffic.encode_s * cpu
    sdk = sum((model.client_cpu(API_LATENCY[api], count)
               for api, count in wire.send_calls.items()), np.zeros(n))
    if SEND in wire.send_calls:  # SQS request bodies: per byte on top
        sdk = sdk + model.client_cpu("sqs.send", 0.0, wire.up_bytes)
    release = grouped_cumsum(encode + sdk * cpu, traffic.src)
    latencies = tuple((API_LATENCY[api], count) for api, count in wire.send_calls.items()
                      if count.any())
    jobs = Jobs(traffic.src, release, Work(np.zeros(n), latencies, wire.up_bytes))
    own = {api: count for api, count in wire.receive_calls.items() if api in receive_apis}
    receive = calls_work(model, own, 0.0, n, wire.down_bytes)
    receive_cpu = decode_s * cpu + sum(
        (model.client_cpu(API_LATENCY[api], count) * cpu for api, count in own.items()),
        np.zeros(n))
    return encode, jobs, Messages(np.arange(n), traffic.dst, receive, receive_cpu)


def _layer_step(counts: Counts, k: int, wire: LayerWire, receive_apis: frozenset[str],
                model: ServiceModel, cpu: float) -> Step:
    traffic = counts.layers[k - 1]
    tasks = counts.workers
    encode, jobs, messages = exchange(traffic, wire, receive_apis, model, cpu,
                                      counts.decode_s(traffic))
    pre = np.bincount(traffic.src, weights=encode, minlength=tasks)
    return Step(pre=Work(pre), local=Work.zero(tasks), post=Work(counts.compute_s()[k - 1] * cpu),
                jobs=jobs, messages=messages)


def build_graph(counts: Counts, wires: list[LayerWire], wire: Wire, model: ServiceModel,
                deployment: Deployment, storage: StorageBytes, before: Work, after: Work
                ) -> TaskGraph:
    """The task graph of one ``fsd run`` (see the module docstring)."""
    tasks = counts.workers
    cpu = cpu_factor(model, deployment.memory_mb)
    queue = np.full(tasks, 1.0 if deployment.channel == "queue" else 0.0)
    shard_miss = model.value("lambda.shard_cache_miss")
    invoke = invoke_latency(deployment.map_mode)
    steps: list[Step] = []
    for block, (first, last) in enumerate(deployment.blocks(counts.depth)):
        for s in range(first, last + 1):
            step = _layer_step(counts, s + 1, wires[s], wire.receive_latency_apis, model, cpu)
            barrier = tail = None
            if s == first and block > 0:
                load = calls_work(model, {GET: np.full(tasks, 1.0 + shard_miss),
                                          "SQS.GetQueueUrl": queue}, cpu, tasks,
                                  storage.start[block] + storage.shard * shard_miss)
                barrier = Work(load.seconds, (("stepfunctions.block_overhead", np.ones(tasks)),
                                              (invoke, np.ones(tasks)), *load.calls), load.bytes)
            if s == last:
                tail = calls_work(model, {PUT: np.full(tasks, 2.0), "S3.HeadObject":
                                          np.ones(tasks)}, cpu, tasks, storage.checkpoint[block])
            steps.append(Step(step.pre, step.local, step.post, step.jobs, step.messages,
                              flush=s == last, tail=tail, barrier=barrier))
    load = calls_work(model, {GET: np.full(tasks, 2.0), "SQS.GetQueueUrl": queue}, cpu, tasks,
                      storage.shard + storage.start[0])
    launch = Work(load.seconds, (("stepfunctions.block_overhead", np.ones(tasks)),
                                 (invoke, np.ones(tasks)),
                                 ("lambda.cold_start", np.ones(tasks)), *load.calls), load.bytes)
    return TaskGraph(tasks, tuple(steps), receiver_for(deployment.channel, model, cpu),
                     SEND_THREADS, model.value("network.connection_bytes_per_s"), launch,
                     before, after, {"strategy": "neuron", "channel": deployment.channel})


def receiver_for(channel: str, model: ServiceModel, cpu: float) -> Receiver:
    """How a worker collects its messages on ``channel`` (its receive loop)."""
    if channel == "queue":
        apis = ("sqs.receive", "sqs.delete")  # the delete runs on a sender thread, same CPU
        return Receiver("longpoll", ("sqs.receive",), int(model.value("sqs.receive_batch")),
                        RECEIVE_WAIT_S,
                        call_cpu=float(sum(model.client_cpu(a) for a in apis)) * cpu)
    return Receiver("backoff", ("s3.get",), FETCH_THREADS, RECEIVE_WAIT_S,
                    {"first_s": POLL_FIRST_S, "max_s": POLL_MAX_S},
                    call_cpu=float(model.client_cpu("s3.get")) * cpu)


def invoke_latency(mode: MapMode) -> str:
    """Starting one Map iteration: inline Map task, or a Distributed Map child execution."""
    return ("stepfunctions.distributed_child" if mode == "distributed"
            else "stepfunctions.lambda_task")
