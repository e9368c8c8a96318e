"""Builder: today's neuron strategy (``fsd run``) as a task graph for the time model.

Tasks are the P Lambda workers; steps are the layers. Per layer, worker p encodes its
blocks on its main thread (CPU measured while counting), hands each to its sender
threads (one delivery per target: SendMessageBatch, or PUT + pointer when spilled; one
PUT per object on the object channel), collects its sources' blocks (long polling SQS,
or probing S3 with backoff) and multiplies (its share of the kernel's measured time,
plus assembling its input). Every ``layers_per_block`` layers the Map ends: each
worker flushes its sends, writes its checkpoint and metrics, and the next block starts
when the slowest worker is done, with a new invocation that reads shard (when its
container has not cached it) and checkpoint. CPU seconds measured on this machine are
scaled to a Lambda: ``compute.lambda_core_per_host_core`` over the vCPU share of the
function's memory (1,769 MB = 1 vCPU; the worker loop is one thread, so at most 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsd_inference.channels.s3 import FETCH_THREADS, POLL_FIRST_S, POLL_MAX_S
from fsd_inference.channels.sqs import SEND_THREADS
from fsd_inference.predict.counts import Counts
from fsd_inference.predict.graph import Jobs, Messages, Receiver, Step, TaskGraph, Work
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.wire import GET, PUT, SEND, LayerWire, Wire

# Which latency of the service model an API call takes.
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
    map_mode: str  # "inline" | "distributed"


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


def _grouped_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sums within runs of equal ``groups`` (sorted), inclusive."""
    total = np.cumsum(values)
    if not values.size:
        return total
    first = np.flatnonzero(np.r_[True, np.diff(groups) != 0])
    offsets = np.repeat(np.r_[0.0, total[first[1:] - 1]], np.diff(np.r_[first, values.size]))
    return np.asarray(total - offsets)


def _layer_step(counts: Counts, k: int, wire: LayerWire, cpu: float, tasks: int,
                receive_apis: frozenset[str]) -> Step:
    traffic = counts.layers[k - 1]
    encode = traffic.encode_s * cpu
    release = _grouped_cumsum(encode, traffic.src)
    pre = np.bincount(traffic.src, weights=encode, minlength=tasks)
    send_calls = tuple((API_LATENCY[api], calls) for api, calls in wire.send_calls.items()
                       if calls.any())
    jobs = Jobs(traffic.src, release, Work(np.zeros(traffic.src.size), send_calls,
                                           wire.up_bytes))
    receive_calls = tuple((API_LATENCY[api], calls) for api, calls in wire.receive_calls.items()
                          if api in receive_apis and calls.any())
    receive = Work(counts.decode_s(traffic) * cpu, receive_calls, wire.down_bytes)
    messages = Messages(np.arange(traffic.src.size), traffic.dst, receive)
    post = counts.compute_s()[k - 1] * cpu
    return Step(pre=Work(pre), local=Work.zero(tasks), post=Work(post), jobs=jobs,
                messages=messages)


def build_graph(counts: Counts, wires: list[LayerWire], wire: Wire, model: ServiceModel,
                deployment: Deployment, storage: StorageBytes, before: Work, after: Work
                ) -> TaskGraph:
    """The task graph of one ``fsd run`` (see the module docstring)."""
    tasks = counts.workers
    cpu = cpu_factor(model, deployment.memory_mb)
    steps: list[Step] = []
    per_block = deployment.layers_per_block
    shard_miss = model.value("lambda.shard_cache_miss") if tasks > 1 else 0.0
    for k in range(1, counts.depth + 1):
        step = _layer_step(counts, k, wires[k - 1], cpu, tasks, wire.receive_latency_apis)
        block = (k - 1) // per_block
        first, last = (k - 1) % per_block == 0, k % per_block == 0 or k == counts.depth
        barrier = tail = None
        if first and block > 0:
            barrier = Work(np.zeros(tasks), (
                ("stepfunctions.block_overhead", np.ones(tasks)),
                (_invoke(deployment), np.ones(tasks)),
                ("s3.get", np.ones(tasks) * (1.0 + shard_miss)),
                ("sqs.send", np.ones(tasks) if deployment.channel == "queue" else np.zeros(tasks)),
            ), storage.start[block] + storage.shard * shard_miss)
        if last:
            tail = Work(np.zeros(tasks), (("s3.put", np.full(tasks, 2.0)),
                                          ("s3.head", np.ones(tasks))),
                        storage.checkpoint[block])
        steps.append(Step(step.pre, step.local, step.post, step.jobs, step.messages,
                          flush=last, tail=tail, barrier=barrier))
    launch = Work(np.zeros(tasks), (
        ("stepfunctions.block_overhead", np.ones(tasks)),
        (_invoke(deployment), np.ones(tasks)),
        ("lambda.cold_start", np.ones(tasks)),
        ("s3.get", np.full(tasks, 2.0)),
        ("sqs.send", np.ones(tasks) if deployment.channel == "queue" else np.zeros(tasks)),
    ), storage.shard + storage.start[0])
    receiver = (Receiver("longpoll", ("sqs.receive",), int(model.value("sqs.receive_batch")),
                         RECEIVE_WAIT_S)
                if deployment.channel == "queue" else
                Receiver("backoff", ("s3.get",), FETCH_THREADS, RECEIVE_WAIT_S,
                         {"first_s": POLL_FIRST_S, "max_s": POLL_MAX_S}))
    return TaskGraph(tasks, tuple(steps), receiver, SEND_THREADS,
                     model.value("network.connection_bytes_per_s"), launch, before, after,
                     {"strategy": "neuron", "channel": deployment.channel})


def _invoke(deployment: Deployment) -> str:
    """Starting one Map iteration: inline Map task, or a Distributed Map child execution."""
    return ("stepfunctions.distributed_child" if deployment.map_mode == "distributed"
            else "stepfunctions.lambda_task")
