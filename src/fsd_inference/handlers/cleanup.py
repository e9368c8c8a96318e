"""Cleanup: ``{"execution": $$.Execution.Name, "state": <the whole state>}`` from the
state machine, or ``{"execution", "status"}`` from the template's EventBridge rule.

The same function serves the success path, every failure path and executions that
ended outside the state machine's control (stopped, timed out); on failure the result's
``cause`` is the readable text the Fail state shows. What is deleted comes from the
execution's own manifest only (cloud/cleanup_step.py), never from the event's state.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.cleanup_step import cleanup_step
from fsd_inference.cloud.events import CleanupEvent
from fsd_inference.cloud.schema import load
from fsd_inference.handlers._common import LambdaContext
from fsd_inference.handlers.observability import add_metrics, observed


@observed("cleanup")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    parsed = load(CleanupEvent, event, "the cleanup event")
    result = cleanup_step(parsed.execution, parsed.error)
    add_metrics(MetricUnit.Count, ObjectsDeleted=result["deleted_objects"],
                FailedRuns=int(result["failed"]))
    return result
