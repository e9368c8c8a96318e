"""The Gather state: final activations -> categories; metrics merged; cost estimated.

Reads every worker's checkpoint of the last block (its columns of Y_L), places them in
one matrix, and writes the categories (1-based rows with a nonzero sum, the Graph
Challenge answer) and one metrics document under ``results/{execution}/``: the same
shape as ``fsd infer --metrics`` (summary, per_worker) plus what only a cloud run has
(Lambda invocations, per-block times, the cost estimate).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.cloud.activations import read_activations
from fsd_inference.cloud.errors import StorageError
from fsd_inference.cloud.history import state_transitions
from fsd_inference.cloud.plan_step import invocation
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.schema import check_bucket
from fsd_inference.cloud.settings import CloudSettings, function_memory_mb
from fsd_inference.cost import estimate_cost
from fsd_inference.exceptions import ConfigError, InputFormatError
from fsd_inference.metrics import LayerMetrics, WorkerMetrics, summarize
from fsd_inference.model.tsv import read_categories, write_categories
from fsd_inference.storage import Storage, storage_for
from fsd_inference.worker import place_rows

DOWNLOAD_THREADS = 8


def worker_metrics_from_dict(data: dict[str, Any]) -> WorkerMetrics:
    """The inverse of WorkerMetrics.to_dict (as written by a worker for one block)."""
    metrics = WorkerMetrics(int(data["worker"]), load_s=float(data.get("load_s", 0.0)),
                            total_s=float(data.get("total_s", 0.0)))
    for layer in data.get("layers", []):
        metrics.layers[int(layer["layer"])] = LayerMetrics(**layer)
    metrics.api_calls.update(data.get("api_calls", {}))
    metrics.api_bytes.update(data.get("api_bytes", {}))
    metrics.billed_requests.update(data.get("billed_requests", {}))
    metrics.bytes_to.update({int(t): int(n) for t, n in data.get("bytes_to", {}).items()})
    return metrics


def merge_worker_metrics(parts: list[WorkerMetrics]) -> WorkerMetrics:
    """One worker's blocks as one record (layers are disjoint across blocks)."""
    merged = WorkerMetrics(parts[0].worker)
    for part in parts:
        merged.layers.update(part.layers)
        merged.api_calls.update(part.api_calls)
        merged.api_bytes.update(part.api_bytes)
        merged.billed_requests.update(part.billed_requests)
        merged.bytes_to.update(part.bytes_to)
        merged.load_s += part.load_s
        merged.total_s += part.total_s
    return merged


def _final_pieces(storage: Storage, run: RunInfo, directory: Path
                  ) -> list[tuple[np.ndarray, np.ndarray, sp.csr_matrix]]:
    """``(row ids, column ids, values)`` of Y_L from the checkpoints of the last block's
    last-stage tasks: each holds its group's rows (in the batch order, not ascending)
    and its columns."""
    last_block = run.blocks - 1
    shape = run.shape
    tasks = [g * shape.width + slot for g in range(shape.groups)
             for slot in shape.last_slots()]

    def fetch(task: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
        path = storage.get_file(run.layout.checkpoint(last_block, task),
                                directory / f"w{task}.fsdm")
        _, columns, y = read_activations(path, run.dtype)
        path.unlink()
        rows = shape.group_row_ids(shape.task(task).group, run.batch)
        if rows.size != y.shape[0]:
            raise ConfigError(f"{storage.uri(run.layout.checkpoint(last_block, task))} holds "
                              f"{y.shape[0]} rows, task {task}'s group has {rows.size}: a "
                              f"stale run?")
        return rows, columns, y

    with ThreadPoolExecutor(min(DOWNLOAD_THREADS, len(tasks))) as pool:
        return list(pool.map(fetch, tasks))


def final_activations(storage: Storage, run: RunInfo, directory: Path) -> sp.csr_matrix:
    """Y_L of the whole batch, placed in one matrix."""
    return place_rows(run.batch, run.neurons, _final_pieces(storage, run, directory),
                      run.dtype)


def final_categories(storage: Storage, run: RunInfo, directory: Path) -> np.ndarray:
    """The categories (1-based rows whose Y_L has a nonzero sum) from the checkpoints
    without placing them in one matrix (that took 1.9 s of a 4096 x 120 block-16 Gather):
    every activation is in [0, cap] (ReLU), so a row's sum is nonzero exactly when one
    of its entries is, in whatever order and pieces the entries are read."""
    active = np.zeros(run.batch, dtype=bool)
    for rows, _, y in _final_pieces(storage, run, directory):
        y.eliminate_zeros()  # a piece of our own: stored zeros do not make a row active
        active[rows[np.diff(y.indptr) > 0]] = True
    return np.flatnonzero(active).astype(np.int64) + 1


def _block_documents(storage: Storage, run: RunInfo) -> list[dict[str, Any]]:
    keys = [run.layout.metrics(b, p) for b in range(run.blocks) for p in range(run.workers)]
    with ThreadPoolExecutor(min(DOWNLOAD_THREADS, len(keys))) as pool:
        return list(pool.map(storage.get_json, keys))


def metrics_document(run: RunInfo, manifest: dict[str, Any], blocks: list[dict[str, Any]],
                     categories: int) -> dict[str, Any]:
    by_worker: dict[int, list[WorkerMetrics]] = {}
    block_seconds: dict[int, float] = {}
    worker_seconds = 0.0
    worker_memory = 0
    for doc in blocks:
        by_worker.setdefault(int(doc["worker"]), []).append(
            worker_metrics_from_dict(doc["metrics"]))
        block = int(doc["block"])
        block_seconds[block] = max(block_seconds.get(block, 0.0), float(doc["invocation_s"]))
        worker_seconds += float(doc["invocation_s"])
        worker_memory = max(worker_memory, int(doc.get("memory_mb", 0)))
    workers = [merge_worker_metrics(by_worker[p]) for p in sorted(by_worker)]
    lambda_section = dict(manifest.get("lambda", {}))
    lambda_section["worker"] = {"invocations": len(blocks), "seconds": worker_seconds,
                                "memory_mb": worker_memory}
    return {
        "execution": run.execution,
        "workers": run.workers,
        "channel": run.channel,
        "shape": run.shape.to_dict(),
        "map": run.map,
        "blocks": run.blocks,
        "layers_per_block": run.layers_per_block,
        "neurons": run.neurons,
        "depth": run.depth,
        "batch": run.batch,
        "categories": categories,
        "phases_s": {**{f"plan_{k}": v for k, v in manifest.get("phases_s", {}).items()},
                     "blocks_s": [block_seconds[b] for b in sorted(block_seconds)]},
        "plan": manifest.get("plan", {}),
        "notes": manifest.get("notes", []),
        "auto": manifest.get("auto"),
        "lambda": lambda_section,
        "api_calls_outside_workers": dict(manifest.get("api_calls", {})),
        "summary": summarize(workers),
        "per_worker": [w.to_dict() for w in workers],
    }


def gather_step(run: RunInfo, settings: CloudSettings | None = None,
                storage: Storage | None = None) -> dict[str, Any]:
    """Run the Gather state; returns a small summary (the execution's output)."""
    started = time.perf_counter()
    settings = settings or CloudSettings()
    check_bucket(run.bucket, settings.aws.bucket, "the run")
    calls = WorkerMetrics(-1)
    storage = storage or storage_for(run.bucket, settings.aws, calls)
    layout = run.layout
    manifest = storage.get_json(layout.manifest)
    with tempfile.TemporaryDirectory(prefix="fsd-gather-", dir=settings.scratch_dir) as tmp:
        directory = Path(tmp)
        categories = final_categories(storage, run, directory)
        write_categories(categories, directory / "categories.txt")
        storage.put_file(layout.categories, directory / "categories.txt")
        match = _compare(storage, manifest, categories, directory)
    document = metrics_document(run, manifest, _block_documents(storage, run),
                                int(categories.size))
    if match is not None:
        document["expected_match"] = match
    own = Counter(document["api_calls_outside_workers"])
    own.update(calls.api_calls)
    own["S3.PutObject"] += 1  # the metrics document itself, written below
    document["api_calls_outside_workers"] = dict(own)
    document["lambda"]["gather"] = invocation(time.perf_counter() - started,
                                              function_memory_mb())
    document["cost"] = estimate_cost(document, settings.worker_memory_mb,
                                     settings.arch, state_transitions(run.workers, run.blocks))
    storage.put_json(layout.metrics_document, document)
    return {
        "execution": run.execution,
        "categories": int(categories.size),
        "inputs": run.batch,
        "shape": run.shape.describe(),  # what ran: with strategy auto, what was chosen
        "auto": _auto_summary(document.get("auto")),
        "expected_match": match,
        "categories_uri": storage.uri(layout.categories),
        "metrics_uri": storage.uri(layout.metrics_document),
        "cost_usd": document["cost"]["total_usd"],
        "totals": run_totals(document),
    }


def _auto_summary(auto: dict[str, Any] | None) -> dict[str, Any] | None:
    """The planner's choice in a few fields (the manifest and metrics keep all of it)."""
    if not auto:
        return None
    return {"chosen": auto["chosen"], "why": auto["why"], "predicted": auto["predicted"]}


def run_totals(document: dict[str, Any]) -> dict[str, float]:
    """The run's traffic, calls and time in a few numbers (the execution's output and the
    Gather function's CloudWatch metrics)."""
    totals = document["summary"]["totals"]
    calls = sum(document["summary"]["api_calls"].values())
    calls += sum(document["api_calls_outside_workers"].values())
    return {"bytes_sent": int(totals.get("bytes_sent", 0)),
            "messages_sent": int(totals.get("messages_sent", 0)),
            "api_calls": int(calls),
            "compute_s": float(totals.get("compute_s", 0.0)),
            "wait_s": float(totals.get("wait_s", 0.0))}


def _compare(storage: Storage, manifest: dict[str, Any], categories: np.ndarray,
             directory: Path) -> bool | None:
    """Compare with the request's ``expect`` categories file, if it named one."""
    key = manifest.get("request", {}).get("expect")
    if not key:
        return None
    try:  # an unreadable or missing expect file is a mismatch, not a failed run
        expected = read_categories(storage.get_file(key, directory / "expected.txt"))
    except (InputFormatError, StorageError):
        return False
    return bool(np.array_equal(expected, categories))
