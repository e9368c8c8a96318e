"""Plan: ``{"execution": $$.Execution.Name, "request": <execution input>}``."""

from __future__ import annotations

from typing import Any

from fsd_inference.cloud.events import PlanEvent
from fsd_inference.cloud.plan_step import plan_step
from fsd_inference.cloud.schema import load
from fsd_inference.handlers._common import LambdaContext, log_result, setup_logging


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    setup_logging()
    parsed = load(PlanEvent, event, "the plan event")
    return log_result("plan", plan_step(parsed.execution, parsed.request))
