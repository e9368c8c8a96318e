"""``fsd infer``: the serverless steps on this machine, one process per task.

Exactly what the state machine runs on AWS (plan_step, then every block's tasks all at
once with worker_step, then gather_step and cleanup_step), with two local backends in
place of the cloud's: a :class:`~fsd_inference.storage.FolderStorage` instead of the S3
bucket, and OS processes instead of Lambda invocations. The channel is any transport:
``memory`` (multiprocessing queues, the default), or ``queue`` / ``object`` against
AWS or the embedded emulator. So every strategy is written once and runs in both places.

Differences from a cloud run, on purpose: one block by default (no 15-minute limit
here, and every block boundary costs a process start per task), no retries (a failed
task fails the run at once, after the same cleanup), and the model and input are
linked into the folder instead of uploaded.
"""

from __future__ import annotations

import queue
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.app.tasks import TaskContext, TaskSpec, task_context, task_main
from fsd_inference.channels import (
    NO_EXCHANGE,
    TRANSPORTS,
    ChannelConfig,
    Transport,
    transport_class,
)
from fsd_inference.cloud.cleanup_step import cleanup_step
from fsd_inference.cloud.gather_step import final_activations, gather_step
from fsd_inference.cloud.plan_step import plan_step
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.cloud.worker_step import task_layers
from fsd_inference.config import cache_dir
from fsd_inference.exceptions import FsdError
from fsd_inference.kernel import resolve_kernel_name, resolve_threads
from fsd_inference.model.binary import save_network
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import read_categories, write_input
from fsd_inference.storage import FolderStorage

WORKER_START_TIMEOUT_S = 120.0
ONE_BLOCK = 1_000_000  # default layers per block: all of them
LAMBDA_MAX_MEMORY_MB = 10_240  # a task must fit the largest Lambda function
TransportFactory = Callable[[str, int, ChannelConfig], Transport]


class WorkerFailed(FsdError):
    """A task failed; names it and says why (the run was cleaned up)."""


@dataclass(frozen=True)
class InferOptions:
    """One local run. ``workers`` is the number of tasks (see strategy/compile.py)."""

    workers: int
    channel: str = "memory"
    partition: str = "hypergraph"
    seed: int = 0
    dtype: str = "float64"
    strategy: str = "neuron"
    stages: int | None = None
    groups: int | None = None
    microbatches: int | None = None
    layers_per_block: int | None = None
    bias: float | None = None
    kernel: str | None = None  # layer kernel name (None: $FSD_KERNEL, else auto)
    # kernel threads per task (None: $FSD_THREADS, else this machine's CPUs shared by the
    # tasks, which all run at once)
    threads: int | None = None
    config: ChannelConfig = field(default_factory=ChannelConfig)

    def request(self, model_key: str, input_key: str) -> dict[str, Any]:
        """The Plan request (cloud/plan_step.py) for this run; None fields left out."""
        request: dict[str, Any] = {
            "model": model_key, "input": input_key, "workers": self.workers,
            "channel": self.channel, "partition": self.partition, "seed": self.seed,
            "dtype": self.dtype, "strategy": self.strategy, "stages": self.stages,
            "groups": self.groups, "microbatches": self.microbatches,
            "message_limit": self.config.max_message_bytes,
            "receive_timeout_s": self.config.receive_timeout_s,
            "layers_per_block": self.layers_per_block, "bias": self.bias,
        }
        return {k: v for k, v in request.items() if v is not None}


@dataclass
class InferResult:
    categories: np.ndarray
    gathered: sp.csr_matrix | None  # Y_L of the whole batch, if the caller asked for it
    run: RunInfo
    metrics: dict[str, Any]  # Gather's metrics document (summary, per_worker, cost...)
    phases: dict[str, float]

    @property
    def activations(self) -> sp.csr_matrix:
        """Y_L of the whole batch (tests and benchmarks compare its bits)."""
        if self.gathered is None:
            raise FsdError("the run was asked for its categories only, not its activations")
        return self.gathered

    @property
    def execution(self) -> str:
        return self.run.execution

    def metrics_document(self) -> dict[str, Any]:
        return {**self.metrics, "local_phases_s": self.phases}


# ----------------------------------------------------------------------------- entry points


def run_inference(network: Network, inputs: sp.csr_matrix, options: InferOptions,
                  progress: Callable[[int, int], None] | None = None,
                  transport_factory: TransportFactory | None = None) -> InferResult:
    """Run on in-memory objects (tests, benchmarks): written to a folder, then
    :func:`infer_files`."""
    with tempfile.TemporaryDirectory(prefix="fsd-infer-src-") as tmp:
        model, source = Path(tmp) / "model.fsdm", Path(tmp) / "input.tsv"
        save_network(network, model)
        write_input(sp.csr_matrix(inputs), source)
        return infer_files(model, source, options, progress, transport_factory)


def infer_files(model: Path, source: Path, options: InferOptions,
                progress: Callable[[int, int], None] | None = None,
                transport_factory: TransportFactory | None = None,
                root: Path | None = None, activations: bool = True) -> InferResult:
    """Plan, run every block's tasks as processes, gather, clean up; raises WorkerFailed
    (after the cleanup) if a task fails. ``activations``: also place Y_L in one matrix
    (the categories do not need it; a dense 10,000 x 4096 Y_L takes seconds)."""
    with _folder(root) as folder:
        storage = FolderStorage(folder)
        model_key = f"models/{Path(model).name}"
        input_key = f"inputs/{Path(source).name}"
        storage.link(model_key, Path(model))
        storage.link(input_key, Path(source))
        settings = CloudSettings(aws=replace(options.config.aws, bucket=storage.bucket),
                                 layers_per_block=ONE_BLOCK,
                                 worker_memory_mb=LAMBDA_MAX_MEMORY_MB,
                                 partition_cache=cache_dir())
        transports = _Transports(options, transport_factory)
        name = f"fsd-{uuid.uuid4().hex[:12]}"
        phases: dict[str, float] = {}
        tick = time.perf_counter()
        resolve_kernel_name(options.kernel)  # bad names and thread counts fail here,
        resolve_threads(options.threads)  # not in every task's process
        context = task_context()  # its fork server imports while the plan is made
        planned = plan_step(name, options.request(model_key, input_key), settings, storage,
                            transports, channels=TRANSPORTS)
        run = RunInfo.from_dict(planned["run"])
        phases["plan_s"] = time.perf_counter() - tick
        try:
            tick = time.perf_counter()
            _run_blocks(context, run, settings, storage, transports.built(run), options,
                        progress)
            phases["workers_s"] = time.perf_counter() - tick
            tick = time.perf_counter()
            gather_step(run, settings, storage)
            gathered = (final_activations(storage, run, folder / "gather") if activations
                        else None)
            categories = read_categories(storage.path(run.layout.categories))
            metrics = storage.get_json(run.layout.metrics_document)
            phases["gather_s"] = time.perf_counter() - tick
        except BaseException as exc:
            error = {"Error": type(exc).__name__, "Cause": str(exc)}
            cleanup_step(name, error, settings, storage, transports)
            raise
        cleanup_step(name, None, settings, storage, transports)
        return InferResult(categories, gathered, run, metrics, phases)


@contextmanager
def _folder(root: Path | None) -> Iterator[Path]:
    if root is not None:
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="fsd-infer-") as tmp:
        yield Path(tmp)


class _Transports:
    """The run's one transport, built when the plan asks for it (plan_step: setup;
    cleanup_step: teardown) and then handed to every task's process."""

    def __init__(self, options: InferOptions, factory: TransportFactory | None) -> None:
        self.options = options
        self.factory = factory or transport_class(options.channel)
        self.transport: Transport | None = None

    def __call__(self, execution: str, workers: int, _: ChannelConfig) -> Transport:
        # the run's channel settings, not the run's bucket: locally the steps' storage is
        # a folder, while a cloud channel's spill and scratch objects go to S3
        if self.transport is None:
            self.transport = self.factory(execution, workers, self.options.config)
        return self.transport

    def built(self, run: RunInfo) -> Transport:
        if run.channel == NO_EXCHANGE:  # the plan found nothing to exchange
            return transport_class(NO_EXCHANGE)(run.execution, run.workers,
                                                self.options.config)
        return self(run.execution, run.workers, self.options.config)


# ----------------------------------------------------------------------------- processes


def _run_blocks(context: TaskContext, run: RunInfo, settings: CloudSettings,
                storage: FolderStorage, transport: Transport, options: InferOptions,
                progress: Callable[[int, int], None] | None) -> None:
    steps = {(b, t): _steps(run, b, t) for b in range(run.blocks) for t in range(run.workers)}
    total, done = sum(steps.values()), 0
    for block in range(run.blocks):
        results = context.Queue()
        processes = [
            context.Process(target=task_main, name=f"fsd-task-{t}", daemon=True,
                            args=(TaskSpec.of(run, block, t, str(storage.root), transport,
                                              settings, options.kernel, options.threads),
                                  results))
            for t in range(run.workers)
        ]
        for process in processes:
            process.start()
        try:
            done = _watch(run, processes, results, progress, done, total)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join(timeout=10)


def _steps(run: RunInfo, block: int, task: int) -> int:
    first, last = task_layers(run, block, run.shape.task(task))
    return max(0, last - first + 1) * run.shape.microbatches


def _watch(run: RunInfo, processes: list[Any], results: Any,
           progress: Callable[[int, int], None] | None, done: int, total: int) -> int:
    finished: set[int] = set()
    silence_limit = run.receive_timeout_s + WORKER_START_TIMEOUT_S
    last_news = time.monotonic()
    while len(finished) < len(processes):
        try:
            kind, task, payload = results.get(timeout=1.0)
        except queue.Empty:
            dead = [p.name for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise WorkerFailed(f"task process(es) died without a report: {dead}") from None
            if time.monotonic() - last_news > silence_limit:
                raise WorkerFailed(f"no task reported for {silence_limit:.0f} s") from None
            continue
        last_news = time.monotonic()
        if kind == "error":
            raise WorkerFailed(f"worker {task} failed: {payload}")
        if kind == "step":
            done += 1
            if progress is not None:
                progress(done, total)
        else:
            finished.add(task)
    return done
