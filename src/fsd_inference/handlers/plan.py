"""Plan: ``{"execution": $$.Execution.Name, "request": <execution input>}``."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.events import PlanEvent
from fsd_inference.cloud.plan_step import plan_step
from fsd_inference.cloud.schema import load
from fsd_inference.handlers._common import LambdaContext
from fsd_inference.handlers.observability import add_metrics, observed


@observed("plan")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    parsed = load(PlanEvent, event, "the plan event")
    result = plan_step(parsed.execution, parsed.request)
    run = result["run"]
    add_metrics(MetricUnit.Count, Workers=run["workers"], Blocks=run["blocks"],
                Inputs=run["batch"])
    return result
