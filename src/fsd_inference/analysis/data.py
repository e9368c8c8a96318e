"""Tables from a run's metrics document (``fsd infer --json``, ``fsd run --json``, or a
cloud execution's ``results/<execution>/metrics.json``): numpy only, no plotting.

Both documents carry ``per_worker``: for each worker its layers (compute_s, wait_s,
send_s, started_at, bytes...) and ``bytes_to`` (frame bytes per target worker).
Documents written before ``started_at`` and ``send_s`` existed still load: the layers
are then laid end to end from zero in each worker's order (their real start times are
unknown), and sending shows as part of compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsd_inference.exceptions import InputFormatError


@dataclass(frozen=True)
class LayerTimes:
    """Per worker (rows) and layer (columns) seconds; ``start`` is relative to the
    earliest layer start of the run, NaN where a worker has no record of a layer."""

    workers: list[int]
    layers: list[int]
    start: np.ndarray
    send: np.ndarray
    wait: np.ndarray
    compute: np.ndarray  # compute without the sending
    measured_starts: bool  # False: starts reconstructed by laying layers end to end

    @property
    def end(self) -> np.ndarray:
        return np.asarray(self.start + self.send + self.wait + self.compute)


@dataclass(frozen=True)
class Traffic:
    """Frame bytes from each worker (row) to each worker (column)."""

    workers: list[int]
    matrix: np.ndarray


def load_document(path: str | Path) -> dict[str, Any]:
    """A metrics document from ``path``; a clear error if it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(path, "not a text file (expected a metrics JSON)") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFormatError(path, f"not JSON: {exc.msg}", exc.lineno) from exc
    check_document(document, path)
    assert isinstance(document, dict)
    return document


def check_document(document: Any, where: str | Path) -> None:
    """Raise InputFormatError unless ``document`` has the per-worker layer records."""
    workers = document.get("per_worker") if isinstance(document, dict) else None
    if not isinstance(workers, list) or not workers:
        raise InputFormatError(where, "no 'per_worker' records: not the metrics of fsd "
                                      "infer or fsd run")
    for index, worker in enumerate(workers):
        if not (isinstance(worker, dict) and isinstance(worker.get("worker"), int)
                and isinstance(worker.get("layers"), list)):
            raise InputFormatError(where, f"per_worker[{index}] lacks 'worker' or 'layers'")
        for layer in worker["layers"]:
            if not (isinstance(layer, dict) and isinstance(layer.get("layer"), int)):
                raise InputFormatError(
                    where, f"per_worker[{index}] (worker {worker['worker']}) has a layer "
                           f"record without a 'layer' number")


def _records(document: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(document["per_worker"], key=lambda w: int(w["worker"]))


def layer_times(document: dict[str, Any]) -> LayerTimes:
    """Each worker's layers: when they started and how their time divides."""
    records = _records(document)
    workers = [int(w["worker"]) for w in records]
    layers = sorted({int(r["layer"]) for w in records for r in w["layers"]})
    column = {layer: j for j, layer in enumerate(layers)}
    shape = (len(workers), len(layers))
    start = np.full(shape, np.nan)
    send, wait, compute = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, worker in enumerate(records):
        for record in worker["layers"]:
            j = column[int(record["layer"])]
            start[i, j] = float(record.get("started_at", 0.0)) or np.nan
            send[i, j] = float(record.get("send_s", 0.0))
            wait[i, j] = float(record.get("wait_s", 0.0))
            compute[i, j] = max(float(record.get("compute_s", 0.0)) - send[i, j], 0.0)
    measured = bool(np.isfinite(start).any())
    if measured:
        start -= np.nanmin(start)
    else:  # end to end per worker, from zero
        durations = send + wait + compute
        start = np.cumsum(durations, axis=1) - durations
    return LayerTimes(workers, layers, start, send, wait, compute, measured)


def traffic(document: dict[str, Any]) -> Traffic:
    """Bytes between every ordered pair of workers (all layers, frames as sent)."""
    records = _records(document)
    workers = [int(w["worker"]) for w in records]
    index = {worker: i for i, worker in enumerate(workers)}
    matrix = np.zeros((len(workers), len(workers)), dtype=np.int64)
    for worker in records:
        for target, sent in worker.get("bytes_to", {}).items():
            if int(target) in index:
                matrix[index[int(worker["worker"])], index[int(target)]] += int(sent)
    return Traffic(workers, matrix)
