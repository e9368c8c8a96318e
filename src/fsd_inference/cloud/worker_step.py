"""One Map iteration: task t runs its layers of one block, then checkpoints.

A task is one (row group, stage, part) of the run's shape (strategy/shape.py); ``worker``
in the event is the task id. The task:

1. loads its slot's shard (cached in /tmp across warm invocations of the same
   execution; all row groups share the shards) and its activations at the block's
   start: the input slice for block 0 (first stage only; a later pipeline stage starts
   from what the previous stage sends it), else the checkpoint the previous block wrote;
2. rebuilds the execution's transport from the state payload, opens its channel and
   runs ``fsd_inference.worker.run_task`` over its layers of the block, micro-batch by
   micro-batch (a stage that is not the last ends by sending the next stage its input);
3. writes its activations after the block's last layer when it owns that layer (the
   next block's start, what a retried block restarts from, what Gather reads) and its
   metrics.

A worker watches its own deadline: after each layer it checks that the slowest layer
so far still fits, with room left to write the checkpoint, and otherwise stops with
BlockDeadlineError (the fix is fewer layers per block), long before Lambda would kill
it. A failure that a rerun can cure (a peer timed out, a connection dropped) becomes
RetryableBlockError, which the state machine retries as a whole block. If the run was
cleaned up meanwhile (its manifest is gone: another worker failed and the failure
path deleted queues and scratch), the worker stops with RunCancelled. Such a straggler
may have written after the cleanup (messages of the object channel, spilled payloads,
its checkpoint), so before it stops it deletes the run's scratch and run prefixes
again: every straggler tidies up after its own last write, and a failed execution
leaves nothing behind (tests/functional/test_app.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import scipy.sparse as sp
from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.channels import ChannelError, Transport
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.activations import read_activations, write_activations
from fsd_inference.cloud.errors import (
    BlockDeadlineError,
    RetryableBlockError,
    RunCancelled,
    StorageError,
)
from fsd_inference.cloud.run import RunInfo, build_transport
from fsd_inference.cloud.schema import check_bucket
from fsd_inference.cloud.settings import CloudSettings, function_memory_mb
from fsd_inference.exceptions import ConfigError
from fsd_inference.kernel import LayerKernel
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.partition.plan import WorkerShard, load_shard
from fsd_inference.storage import Storage, storage_for
from fsd_inference.strategy.shape import Task
from fsd_inference.worker import run_task

CHECKPOINT_RESERVE_S = 30.0  # kept free after the last layer: upload checkpoint + metrics
LAYER_SAFETY = 1.5  # the next layer may take this much longer than the slowest so far
CACHE_DIR = "fsd-cache"


class Deadline:
    """Stops a block before the invocation runs out of time."""

    def __init__(self, seconds: float, worker: int, block: int, last: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = clock() + seconds
        self.worker = worker
        self.block = block
        self.last = last
        self._mark = clock()
        self.slowest = 0.0

    def begin(self) -> None:
        """The layers start now (loading the shard is not a layer's time)."""
        self._mark = self.clock()

    def remaining(self) -> float:
        return self.end - self.clock()

    def after_layer(self, layer: int) -> None:
        now = self.clock()
        self.slowest = max(self.slowest, now - self._mark)
        self._mark = now
        if layer >= self.last:
            return
        needed = self.slowest * LAYER_SAFETY + CHECKPOINT_RESERVE_S
        if self.remaining() < needed:
            raise BlockDeadlineError(
                self.worker, self.block, layer,
                f"{self.remaining():.0f} s left in this invocation, but layers take up to "
                f"{self.slowest:.1f} s and {self.last - layer} remain in the block: lower "
                f"layers_per_block (or raise WorkerMemory for more CPU)")


def _cached_shard(storage: Storage, run: RunInfo, slot: int, scratch: Path) -> WorkerShard:
    """The slot's shard: read in place when the storage is local, else from /tmp if this
    warm container fetched it before, else downloaded.

    Only the current execution's shards are kept, so /tmp does not fill up across runs.
    """
    key = run.layout.shard(slot)
    local = storage.local_path(key)
    if local is not None:
        return load_shard(local, run.dtype)
    root = scratch / CACHE_DIR
    home = root / run.execution
    if root.is_dir():
        for old in root.iterdir():
            if old != home:
                shutil.rmtree(old, ignore_errors=True)
    path = home / f"shard-{slot}.fsdm"
    if not path.is_file():
        storage.get_file(key, path)
    return load_shard(path, run.dtype)


def _start(storage: Storage, run: RunInfo, block: int, task: Task, first: int,
           directory: Path, shard: WorkerShard) -> sp.csr_matrix:
    """The task's activations entering layer ``first``: read from the input slice or the
    previous block's checkpoint, or nothing (no columns) for a later pipeline stage."""
    r0, r1 = run.shape.group_rows(task.group, run.batch)
    rows = r1 - r0
    expected = shard.input_columns if first == 1 else shard.layers[first - 2].outputs
    if block == 0 and task.stage > 0:
        return sp.csr_matrix((rows, 0), dtype=run.dtype)
    key = (run.layout.input(task.task) if block == 0
           else run.layout.checkpoint(block - 1, task.task))
    _, columns, y = read_activations(storage.get_file(key, directory / "start.fsdm"), run.dtype)
    if columns.size != expected.size or (columns != expected).any() or y.shape[0] != rows:
        raise ConfigError(f"{storage.uri(key)} holds other rows or columns than task "
                          f"{task.task}'s shard expects at layer {first}: a stale run?")
    return y


def _cancelled(storage: Storage, run: RunInfo) -> bool:
    try:
        return not storage.exists(run.layout.manifest)
    except StorageError:
        return False


def _withdraw(storage: Storage, run: RunInfo) -> None:
    """Delete what this straggler may have written after the run was cleaned up."""
    for prefix in (scratch_prefix(run.execution), run.layout.prefix):
        with suppress(StorageError):
            storage.delete_prefix(prefix)


def task_layers(run: RunInfo, block: int, task: Task) -> tuple[int, int]:
    """The layers ``(first, last)`` task runs in ``block``: its stage's layers within the
    block's (a run with several stages has one block)."""
    first, last = run.layers(block)
    stage = run.shape.stages[task.stage]
    return max(first, stage.first), min(last, stage.last)


def worker_step(run: RunInfo, block: int, worker: int, deadline_s: float,
                settings: CloudSettings | None = None, storage: Storage | None = None,
                transport: Transport | None = None,
                clock: Callable[[], float] = time.monotonic,
                on_step: Callable[[int, int], None] | None = None,
                kernel: LayerKernel | None = None) -> dict[str, Any]:
    """Run ``block`` for task ``worker``; returns a small JSON-safe summary.

    ``on_step(layer, part)`` (local runs: progress) is called after each computed step;
    ``kernel``: the layer kernel (default: resolved from the environment, every CPU of
    the function).
    """
    started = clock()
    settings = settings or CloudSettings()
    check_bucket(run.bucket, settings.aws.bucket, "the run")
    if not 0 <= worker < run.workers:
        raise ConfigError(f"worker {worker} outside 0..{run.workers - 1}")
    task = run.shape.task(worker)
    first, last = task_layers(run, block, task)
    metrics = WorkerMetrics(worker)
    storage = storage or storage_for(run.bucket, settings.aws, metrics)
    deadline = Deadline(deadline_s, worker, block, last, clock)
    layout = run.layout
    stage = run.shape.stages[task.stage]
    r0, r1 = run.shape.group_rows(task.group, run.batch)
    bounds = run.shape.microbatch_bounds(r1 - r0)
    send_tail = stage.last < run.depth

    def step_done(layer: int, part: int) -> None:
        if part == bounds.size - 2:  # the last micro-batch finished this layer
            deadline.after_layer(layer)
        if on_step is not None:
            on_step(layer, part)

    with tempfile.TemporaryDirectory(prefix="fsd-worker-", dir=settings.scratch_dir) as tmp:
        directory = Path(tmp)
        try:
            shard = _cached_shard(storage, run, task.slot, settings.scratch_dir)
            y = _start(storage, run, block, task, first, directory, shard)
        except StorageError as exc:
            if _cancelled(storage, run):
                raise RunCancelled(f"worker {worker}, block {block}: execution "
                                   f"{run.execution} was already cleaned up ({exc})") from exc
            raise
        metrics.load_s = clock() - started
        transport = transport or build_transport(run, settings.aws)
        try:
            channel = transport.channel(worker, metrics)
            try:
                deadline.begin()
                y = run_task(shard, y, channel, first, last, bounds,
                             order="part" if len(run.shape.stages) > 1 else "layer",
                             send_tail=send_tail, on_step=step_done,
                             offset=task.group * run.shape.width, kernel=kernel)
            finally:
                channel.close()
        except (ChannelError, ClientError, BotoCoreError) as exc:
            if _cancelled(storage, run):
                _withdraw(storage, run)
                raise RunCancelled(f"worker {worker}, block {block}: execution "
                                   f"{run.execution} was cleaned up while this worker ran "
                                   f"({exc})") from exc
            raise RetryableBlockError(worker, block, str(exc)) from exc
        if last == run.layers(block)[1]:  # it produces the block's last layer
            outputs = shard.layers[last - 1].outputs
            write_activations(directory / "end.fsdm", y, outputs,
                              {"execution": run.execution, "worker": worker,
                               "block": block, "layer": last})
            storage.put_file(layout.checkpoint(block, worker), directory / "end.fsdm")
    seconds = metrics.total_s = clock() - started
    document = {
        "worker": worker, "block": block, "first": first, "last": last,
        "invocation_s": seconds, "memory_mb": function_memory_mb(),
        "metrics": metrics.to_dict(),
    }
    storage.put_bytes(layout.metrics(block, worker), json.dumps(document).encode(),
                      "application/json")
    if _cancelled(storage, run):  # another worker failed and the run was cleaned up
        _withdraw(storage, run)
        raise RunCancelled(f"worker {worker}, block {block}: execution {run.execution} was "
                           f"cleaned up while this worker ran; its writes were withdrawn")
    return {"worker": worker, "block": block, "first": first, "last": last,
            "seconds": round(seconds, 3), "nnz": int(y.nnz)}
