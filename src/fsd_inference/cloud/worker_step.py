"""One Map iteration: worker p runs the layers of one block, then checkpoints.

1. load its shard (cached in /tmp across warm invocations of the same execution) and
   its activations at the block's start: the input slice for block 0, else the
   checkpoint the previous block wrote;
2. rebuild the execution's transport from the state payload, open its channel and run
   ``fsd_inference.worker.run_layers`` over the block's layers;
3. write its activations after the block's last layer (the next block's start, and
   what a retried block restarts from) and its metrics.

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
from fsd_inference.cloud.settings import CloudSettings, function_memory_mb
from fsd_inference.cloud.storage import Storage, storage_for
from fsd_inference.exceptions import ConfigError
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.partition.plan import WorkerShard, load_shard
from fsd_inference.worker import run_layers

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


def _cached_shard(storage: Storage, run: RunInfo, worker: int, scratch: Path) -> WorkerShard:
    """The shard from /tmp if this warm container fetched it before, else from S3.

    Only the current execution's shards are kept, so /tmp does not fill up across runs.
    """
    root = scratch / CACHE_DIR
    home = root / run.execution
    if root.is_dir():
        for old in root.iterdir():
            if old != home:
                shutil.rmtree(old, ignore_errors=True)
    path = home / f"shard-{worker}.fsdm"
    if not path.is_file():
        storage.get_file(run.layout.shard(worker), path)
    return load_shard(path, run.dtype)


def _start(storage: Storage, run: RunInfo, block: int, worker: int, directory: Path,
           shard: WorkerShard) -> sp.csr_matrix:
    key = run.layout.input(worker) if block == 0 else run.layout.checkpoint(block - 1, worker)
    _, columns, y = read_activations(storage.get_file(key, directory / "start.fsdm"), run.dtype)
    first, _ = run.layers(block)
    expected = shard.input_columns if first == 1 else shard.layers[first - 2].outputs
    if columns.size != expected.size or (columns != expected).any():
        raise ConfigError(f"s3://{storage.bucket}/{key} holds other columns than worker "
                          f"{worker}'s shard expects at layer {first}: a stale run?")
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


def worker_step(run: RunInfo, block: int, worker: int, deadline_s: float,
                settings: CloudSettings | None = None, storage: Storage | None = None,
                transport: Transport | None = None,
                clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Run ``block`` for ``worker``; returns a small JSON-safe summary."""
    started = clock()
    settings = settings or CloudSettings()
    if not 0 <= worker < run.workers:
        raise ConfigError(f"worker {worker} outside 0..{run.workers - 1}")
    first, last = run.layers(block)
    metrics = WorkerMetrics(worker)
    storage = storage or storage_for(run.bucket, settings.aws, metrics)
    deadline = Deadline(deadline_s, worker, block, last, clock)
    layout = run.layout
    with tempfile.TemporaryDirectory(prefix="fsd-worker-", dir=settings.scratch_dir) as tmp:
        directory = Path(tmp)
        try:
            shard = _cached_shard(storage, run, worker, settings.scratch_dir)
            y = _start(storage, run, block, worker, directory, shard)
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
                y = run_layers(shard, y, channel, first, last, on_layer=deadline.after_layer,
                               parts=run.parts)
            finally:
                channel.close()
        except (ChannelError, ClientError, BotoCoreError) as exc:
            if _cancelled(storage, run):
                _withdraw(storage, run)
                raise RunCancelled(f"worker {worker}, block {block}: execution "
                                   f"{run.execution} was cleaned up while this worker ran "
                                   f"({exc})") from exc
            raise RetryableBlockError(worker, block, str(exc)) from exc
        outputs = shard.layers[last - 1].outputs
        write_activations(directory / "end.fsdm", y, outputs,
                          {"execution": run.execution, "worker": worker, "block": block,
                           "layer": last})
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
