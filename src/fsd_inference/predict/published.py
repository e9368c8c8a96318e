"""Builder: the published system (FSD-Inference, ICDE 2024) as a task graph.

Used to validate the time model against the only real AWS measurements available: the
published runs' counts and times (shared/reference/fsd-published-*.csv). The model is
configured like that system, from its public worker code (Joe-Oakley/FSD-Inference-
ICDE-2024, src/sds-inf-queue and src/sds-inf-object), and takes the run's counts and its
computation and compression times as given; it predicts the communication time.

Per layer, each worker of the published system (both channels):

1. extracts and compresses the rows each target needs (zlib text; its compression timer),
2. sends: queue: PublishBatch calls of up to 10 messages / 256 KiB on 4 threads to an SNS
   topic that fans out to the targets' SQS queues (filter policies); object: one PUT per
   target on a default thread pool (os.cpu_count() + 4 threads), compressing inside the
   threads; it waits for all of its sends,
3. multiplies its own rows (its computation timer),
4. receives: queue: a loop of DynamoDB Query ("who has nothing for me"), ReceiveMessage
   (1 s long poll, up to 10) and DeleteMessageBatch, decoding each message (eval + zlib,
   its compression timer); object: LIST the layer's prefix, GET new objects on threads,
   sleep 0.1 s, until every source is listed, then wait for the GETs,
5. multiplies the received rows and activates (computation).

Its communication timer covers 1, 2 and 4 (compression included), so the predicted
communication time per worker is the predicted batch time minus the given computation.

Only totals over workers are published, so every worker gets the averages per layer
(counts rounded up or down at random, keeping the totals); half of the computation is
put before the receive and half after, half of the compression on each side.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsd_inference.exceptions import InputFormatError
from fsd_inference.predict.engine import Simulation
from fsd_inference.predict.graph import Jobs, Messages, Receiver, Step, TaskGraph, Work
from fsd_inference.predict.neuron import cpu_factor, grouped_cumsum
from fsd_inference.predict.params import ServiceModel

LAYERS = 120
# Lambda memory the published runs used per network size (ANCHORS.md)
MEMORY_MB = {1024: 1000, 4096: 1500, 16384: 2000, 65536: 4000}
SNS_PUBLISH_THREADS = 4  # sds_inf_queue_worker.py
RECEIVE_WAIT_S = 1.0  # WAIT_TIME_SECS
MAX_RECEIVE = 10
LIST_SLEEP_S = 0.1  # S3_LIST_SLEEP_TIME


@dataclass(frozen=True)
class PublishedRun:
    """One published configuration; counts and seconds are totals over workers."""

    config: str
    channel: str  # "queue" | "object"
    workers: int
    neurons: int
    messages: float  # queue: messages (chunks) sent; object: objects written
    calls: float  # queue: PublishBatch calls; object: objects written
    bytes: float  # bytes sent
    polls: float  # queue: ReceiveMessage calls; object: LIST scans
    computation_s: float
    compression_s: float
    communication_s: float
    targets: float | None = None  # targets per worker and layer (from the object run)
    object_bytes_ratio: float = 1.0  # object / queue bytes of the same configuration

    @property
    def memory_mb(self) -> int:
        return MEMORY_MB.get(self.neurons, 2048)

    @property
    def key(self) -> str:
        """``{neurons}n_{workers}w``: pairs a queue run with the object run of its config."""
        return f"{self.neurons}n_{self.workers}w"

    def per_worker_layer(self, total: float) -> float:
        return total / (self.workers * LAYERS)


_COLUMNS = {
    "queue": ("METRIC_NUM_MESSAGES_SENT", "METRIC_PUBLISH_CALLS", "METRIC_SIZE_MESSAGES_SENT",
              "METRIC_RECEIVE_POLL_CALLS"),
    "object": ("METRIC_S3_NUM_WRITES", "METRIC_S3_NUM_WRITES", "METRIC_S3_WRITE_SIZE",
               "METRIC_S3_FOLDER_SCANS"),
}


def read_published(path: Path | str, channel: str) -> list[PublishedRun]:
    """The runs of one published CSV (fsd-published-queue.csv or -object.csv)."""
    names = _COLUMNS[channel]
    runs = []
    with open(path, newline="", encoding="utf-8") as stream:
        for line, row in enumerate(csv.DictReader(stream), start=2):
            try:
                messages, calls, size, polls = (float(row[n]) for n in names)
                runs.append(PublishedRun(
                    config=row["CONFIG"], channel=channel,
                    workers=int(row["TOTAL_NWORKERS"]), neurons=int(row["NUM_NEURONS"]),
                    messages=messages, calls=calls, bytes=size, polls=polls,
                    computation_s=float(row["METRIC_ELAPSED_TIME_COMPUTATION"]),
                    compression_s=float(row["METRIC_ELAPSED_TIME_COMPRESSION"]),
                    communication_s=float(row["METRIC_ELAPSED_TIME_COMMUNICATION"])))
            except (KeyError, ValueError, TypeError) as exc:
                raise InputFormatError(path, f"not a published {channel} run ({exc})",
                                       line) from exc
    return runs


def _spread(average: float, tasks: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts per worker with the given average (rounded up or down at random)."""
    return np.floor(average + rng.random(tasks)).astype(np.int64)


def _visible_cores(memory_mb: int) -> int:
    """CPUs a Lambda function sees (AWS-LATENCY.md): 2 up to 3,008 MB, 3 up to 5,307..."""
    for limit, cores in ((3008, 2), (5307, 3), (7076, 4), (8845, 5)):
        if memory_mb <= limit:
            return cores
    return 6


def _messages(run: PublishedRun, tasks: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, call rank within src, calls per src) of one layer's messages."""
    per_worker = _spread(run.per_worker_layer(run.messages), tasks, rng)
    calls = np.minimum(per_worker, np.maximum(
        _spread(run.per_worker_layer(run.calls), tasks, rng), (per_worker > 0).astype(int)))
    targets = run.targets if run.targets is not None else run.per_worker_layer(run.messages)
    width = np.clip(_spread(targets, tasks, rng), 1, max(1, tasks - 1))
    src = np.repeat(np.arange(tasks), per_worker)
    index = np.arange(src.size) - np.repeat(np.cumsum(per_worker) - per_worker, per_worker)
    dst = (src + 1 + index % width[src]) % tasks
    rank = index * calls[src] // np.maximum(per_worker[src], 1)
    return src, dst, rank, calls


@dataclass(frozen=True)
class _Layer:
    """One layer's messages and the per-worker figures both channels share."""

    src: np.ndarray
    dst: np.ndarray
    rank: np.ndarray  # the publish call of each message within its worker's calls
    calls: np.ndarray  # calls per worker
    sent: np.ndarray  # messages per worker
    msg_bytes: float
    compress: float  # compression per worker, each side
    compute: float  # computation per worker, each side of the receive
    decode: np.ndarray  # per message
    extract: float  # row extraction CPU per worker (this machine's seconds)


def _layer(run: PublishedRun, tasks: int, rng: np.random.Generator, model: ServiceModel
           ) -> _Layer:
    src, dst, rank, calls = _messages(run, tasks, rng)
    compress = run.per_worker_layer(run.compression_s) / 2
    received = np.bincount(dst, minlength=tasks)
    decode = np.divide(compress, received[dst], out=np.zeros(dst.size),
                       where=received[dst] > 0)
    return _Layer(src, dst, rank, calls, np.bincount(src, minlength=tasks),
                  run.bytes / max(run.messages, 1.0), compress,
                  run.per_worker_layer(run.computation_s) / 2, decode,
                  _extract_s(model, run.per_worker_layer(run.bytes), run.channel,
                             run.object_bytes_ratio))


def _extract_s(model: ServiceModel, payload: float, channel: str, bytes_ratio: float) -> float:
    """CPU seconds of the published system's row extraction for ``payload`` bytes sent:
    rows per byte from its only per-layer counts (queue, float32 text), scaled to the
    object channel's float64 text by the two channels' byte ratio."""
    rows_per_byte = model.value("published.rows_per_byte")
    if channel == "object":
        rows_per_byte /= bytes_ratio
    return payload * rows_per_byte * model.value("published.row_extract_cpu_s")


def _queue_step(layer: _Layer, tasks: int, model: ServiceModel, cpu: float) -> Step:
    """Row extraction and compression of every block, then publish calls on 4 threads
    (their SDK CPU one at a time), SNS to SQS, then the receive loop, which queries
    DynamoDB once more at the end."""
    job_task = np.repeat(np.arange(tasks), layer.calls)
    per_call = np.repeat(layer.sent / np.maximum(layer.calls, 1), layer.calls) * layer.msg_bytes
    sdk = model.client_cpu("sns.publish", 1.0, per_call) * cpu
    prepare = layer.compress + layer.extract * cpu
    jobs = Jobs(job_task, prepare + grouped_cumsum(sdk, job_task),
                Work(np.zeros(job_task.size), (("sns.publish", np.ones(job_task.size)),),
                     per_call * _sns_weight(model)))
    first_job = np.cumsum(layer.calls) - layer.calls
    n = layer.dst.size
    messages = Messages(first_job[layer.src] + layer.rank, layer.dst,
                        Work(np.zeros(n), (), np.full(n, layer.msg_bytes)), layer.decode,
                        transit="sns.to_sqs")
    post = Work(np.full(tasks, layer.compute) + model.client_cpu("dynamodb.query") * cpu,
                (("dynamodb.query", np.ones(tasks)),))
    return Step(pre=Work(np.full(tasks, prepare)),
                local=Work(np.full(tasks, layer.compute)), post=post, jobs=jobs,
                messages=messages, wait_sends=True)


def _object_step(layer: _Layer, tasks: int, model: ServiceModel, cpu: float) -> Step:
    """One PUT per target on the thread pool, compressing inside the threads (CPU one at
    a time); then LIST / GET rounds."""
    src, dst, n = layer.src, layer.dst, layer.dst.size
    per_put = np.divide(layer.compress, layer.sent[src], out=np.zeros(n),
                        where=layer.sent[src] > 0)
    per_extract = np.divide(layer.extract, layer.sent[src], out=np.zeros(n),
                            where=layer.sent[src] > 0)
    serial = per_put + (per_extract + model.client_cpu("s3.put", 1.0, layer.msg_bytes)) * cpu
    jobs = Jobs(src, grouped_cumsum(serial, src), Work(np.zeros(n), (
        ("s3.put", np.ones(n)),), np.full(n, layer.msg_bytes)))
    messages = Messages(np.arange(n), dst, Work(np.zeros(n), (("s3.get", np.ones(n)),),
                                                np.full(n, layer.msg_bytes)),
                        layer.decode + model.client_cpu("s3.get", 1.0, layer.msg_bytes) * cpu)
    return Step(pre=Work.zero(tasks), local=Work(np.full(tasks, layer.compute)),
                post=Work(np.full(tasks, layer.compute)), jobs=jobs, messages=messages,
                wait_sends=True)


STEPS = {"queue": _queue_step, "object": _object_step}


def _sns_weight(model: ServiceModel) -> float:
    """Publish payload bytes in units of connection bytes (the graph has one bandwidth)."""
    return (model.value("network.connection_bytes_per_s")
            / model.value("sns.publish_bytes_per_s"))


def build_published_graph(run: PublishedRun, model: ServiceModel, seed: int = 0) -> TaskGraph:
    """The task graph of one published run (see the module docstring)."""
    rng = np.random.default_rng(seed)
    tasks = run.workers
    cpu = cpu_factor(model, run.memory_mb)
    build = STEPS[run.channel]
    steps = tuple(build(_layer(run, tasks, rng, model), tasks, model, cpu)
                  for _ in range(LAYERS))
    if run.channel == "queue":
        apis = ("dynamodb.query", "sqs.receive", "sqs.delete")
        receiver = Receiver("longpoll", apis, MAX_RECEIVE, RECEIVE_WAIT_S,
                            call_cpu=float(sum(model.client_cpu(a) for a in apis)) * cpu)
        senders = SNS_PUBLISH_THREADS
    else:
        receiver = Receiver("interval", ("s3.list",), MAX_RECEIVE, RECEIVE_WAIT_S,
                            {"sleep_s": LIST_SLEEP_S},
                            call_cpu=float(model.client_cpu("s3.list")) * cpu)
        senders = _visible_cores(run.memory_mb) + 4
    zero = Work.zero(tasks)
    return TaskGraph(tasks, steps, receiver, senders,
                     model.value("network.connection_bytes_per_s"), zero, Work.zero(1),
                     Work.zero(1), {"strategy": "published", "channel": run.channel})


def predicted_communication(run: PublishedRun, simulation: Simulation) -> float:
    """Communication seconds per worker: its batch time minus its given computation."""
    timeline = simulation.timeline
    batch = float((timeline.end[:, -1] - timeline.start[:, 0]).mean())
    return batch - run.computation_s / run.workers
