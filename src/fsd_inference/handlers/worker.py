"""Worker: ``{"run": <plan's run>, "block": b, "worker": p}`` (one Map item)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.worker_step import worker_step
from fsd_inference.handlers._common import (
    LambdaContext,
    remaining_seconds,
    require,
    require_int,
)
from fsd_inference.handlers.observability import add_metrics, observed


@observed("worker")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    run = RunInfo.from_dict(require(event, "run"))
    result = worker_step(run, require_int(event, "block"), require_int(event, "worker"),
                         remaining_seconds(context))
    add_metrics(MetricUnit.Count, Layers=result["last"] - result["first"] + 1)
    return result
