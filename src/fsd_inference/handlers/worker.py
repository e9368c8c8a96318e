"""Worker: ``{"run": <plan's run>, "block": b, "worker": p}`` (one Map item)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.events import WorkerEvent
from fsd_inference.cloud.schema import load
from fsd_inference.cloud.worker_step import worker_step
from fsd_inference.handlers._common import LambdaContext, remaining_seconds
from fsd_inference.handlers.observability import add_metrics, observed


@observed("worker")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    parsed = load(WorkerEvent, event, "the worker event")
    result = worker_step(parsed.run, parsed.block, parsed.worker, remaining_seconds(context))
    add_metrics(MetricUnit.Count, Layers=result["last"] - result["first"] + 1)
    return result
