"""``fsd infer``: plan, start P worker processes on one channel, gather, report.

The same steps the state machine runs in the cloud, on one machine: load the model,
partition (or reuse the cached ownership), cut per-worker shards and input slices to
files, start every worker at once (they wait on each other), gather the final
activations into categories, and write the metrics.
"""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels import ChannelConfig, Transport, transport_class
from fsd_inference.constants import DEFAULT_PARTS, MAX_PARTS
from fsd_inference.exceptions import ConfigError, FsdError
from fsd_inference.kernel import get_kernel, resolve_kernel_name, resolve_threads
from fsd_inference.metrics import WorkerMetrics, summarize
from fsd_inference.model.binary import pack_csr, read_bundle, unpack_csr, write_bundle
from fsd_inference.model.network import Network, resolve_dtype
from fsd_inference.model.reference import categories_of
from fsd_inference.partition.cache import owners_for
from fsd_inference.partition.plan import CommPlan, build_plan, load_shard, save_shard
from fsd_inference.worker import merge_columns, run_layers

WORKER_START_TIMEOUT_S = 120.0


class WorkerFailed(FsdError):
    pass


@dataclass(frozen=True)
class InferOptions:
    workers: int
    channel: str = "memory"
    partition: str = "hypergraph"
    seed: int = 0
    dtype: str = "float64"
    config: ChannelConfig = field(default_factory=ChannelConfig)
    parts: int = DEFAULT_PARTS  # row parts per layer (worker.py): compute overlaps exchange
    kernel: str | None = None  # layer kernel name (None: $FSD_KERNEL, else auto)
    threads: int | None = None  # kernel threads per worker (None: $FSD_THREADS, else a
    # fair share of this machine's CPUs: all workers run at once)


@dataclass
class InferResult:
    categories: np.ndarray
    activations: sp.csr_matrix
    plan: CommPlan
    workers: list[WorkerMetrics]
    phases: dict[str, float]
    execution: str

    def metrics_document(self) -> dict[str, Any]:
        return {
            "execution": self.execution,
            "workers": len(self.workers),
            "categories": int(self.categories.size),
            "phases_s": self.phases,
            "plan": {
                # columns on the wire (twins once) and neuron copies |R_l(q, p)|
                "neurons_sent_total": self.plan.total_neurons,
                "neurons_sent_per_layer": self.plan.neurons_per_layer.tolist(),
                "neuron_copies_total": int(self.plan.copies.sum()),
            },
            "summary": summarize(self.workers),
            "per_worker": [w.to_dict() for w in self.workers],
        }


def write_work(network: Network, inputs: sp.csr_matrix, owners: np.ndarray, workers: int,
               directory: Path) -> CommPlan:
    """Shards and input slices per worker, as files: what each worker loads, and only that."""
    plan, shards = build_plan(network, owners, workers)
    for shard in shards:
        save_shard(shard, directory / f"shard-{shard.worker}.fsdm")
        slice_ = sp.csr_matrix(inputs[:, shard.input_columns])
        write_bundle(directory / f"input-{shard.worker}.fsdm", {"kind": "input"},
                     pack_csr("y", slice_))
    return plan


def _worker_main(worker: int, directory: str, transport: Transport, options: InferOptions,
                 results: Any) -> None:
    """Entry point of one worker process: load its files, run every layer, report."""
    metrics = WorkerMetrics(worker)
    try:
        started = time.perf_counter()
        kernel = get_kernel(options.kernel, options.threads, share=options.workers)
        shard = load_shard(Path(directory) / f"shard-{worker}.fsdm", options.dtype)
        _, arrays = read_bundle(Path(directory) / f"input-{worker}.fsdm")
        y = unpack_csr("y", arrays, options.dtype)
        channel = transport.channel(worker, metrics)
        metrics.load_s = time.perf_counter() - started
        try:
            y = run_layers(shard, y, channel,
                           on_layer=lambda k: results.put(("layer", worker, k)),
                           parts=options.parts, kernel=kernel)
        finally:
            channel.close()
        metrics.total_s = time.perf_counter() - started
        results.put(("done", worker, (shard.layers[-1].outputs, y, metrics)))
    except FsdError as exc:
        results.put(("error", worker, str(exc)))
    except Exception:  # a bug: keep the whole traceback for the report
        results.put(("error", worker, traceback.format_exc()))


def run_inference(
    network: Network,
    inputs: sp.csr_matrix,
    options: InferOptions,
    progress: Callable[[int, int], None] | None = None,
    transport_factory: Callable[[str, int, ChannelConfig], Transport] | None = None,
) -> InferResult:
    """Run the distributed inference on local worker processes; raises on any failure."""
    resolve_dtype(options.dtype)
    if not 1 <= options.parts <= MAX_PARTS:
        raise ConfigError(f"parts must be between 1 and {MAX_PARTS}, got {options.parts}")
    resolve_kernel_name(options.kernel)  # bad names and thread counts fail here, not in
    resolve_threads(options.threads)  # every worker process
    execution = f"fsd-{uuid.uuid4().hex[:12]}"
    phases: dict[str, float] = {}
    tick = time.perf_counter()
    owners = owners_for(network, options.partition, options.workers, options.seed)
    phases["partition_s"] = time.perf_counter() - tick
    ctx = multiprocessing.get_context("spawn")
    factory = transport_factory or transport_class(options.channel)
    with tempfile.TemporaryDirectory(prefix="fsd-run-") as tmp:
        tick = time.perf_counter()
        plan = write_work(network, inputs, owners, options.workers, Path(tmp))
        phases["plan_s"] = time.perf_counter() - tick
        transport = factory(execution, options.workers, options.config)
        tick = time.perf_counter()
        transport.setup()
        try:
            outputs = _run_processes(ctx, tmp, transport, options, network.depth, progress)
        finally:
            transport.teardown()
        phases["workers_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    activations = merge_columns(inputs.shape[0], network.neurons,
                                ((columns, y) for columns, y, _ in outputs.values()),
                                options.dtype)
    categories = categories_of(activations)
    phases["gather_s"] = time.perf_counter() - tick
    return InferResult(categories, activations, plan,
                       [outputs[p][2] for p in range(options.workers)], phases, execution)


def _run_processes(ctx: Any, directory: str, transport: Transport, options: InferOptions,
                   depth: int, progress: Callable[[int, int], None] | None
                   ) -> dict[int, tuple[np.ndarray, sp.csr_matrix, WorkerMetrics]]:
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_worker_main, name=f"fsd-worker-{p}", daemon=True,
                    args=(p, directory, transport, options, results))
        for p in range(options.workers)
    ]
    for process in processes:
        process.start()
    done: dict[int, tuple[np.ndarray, sp.csr_matrix, WorkerMetrics]] = {}
    layers_done = np.zeros(options.workers, dtype=np.int64)
    silence_limit = options.config.receive_timeout_s + WORKER_START_TIMEOUT_S
    last_news = time.monotonic()
    try:
        while len(done) < options.workers:
            try:
                kind, worker, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise WorkerFailed(f"worker process(es) died without a report: {dead}"
                                       ) from None
                if time.monotonic() - last_news > silence_limit:
                    raise WorkerFailed(f"no worker reported for {silence_limit:.0f} s") from None
                continue
            last_news = time.monotonic()
            if kind == "error":
                raise WorkerFailed(f"worker {worker} failed: {payload}")
            if kind == "layer":
                layers_done[worker] = payload
                if progress is not None:
                    progress(int(layers_done.min()), depth)
            else:
                done[worker] = payload
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
    return done
