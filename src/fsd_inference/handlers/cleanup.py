"""Cleanup: ``{"execution": $$.Execution.Name, "state": <the whole state>}``.

The same function serves the success path and every failure path; on failure the
state carries ``error`` ({"Error", "Cause"} from the Catch) and the result's ``cause``
is the readable text the Fail state shows.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.cleanup_step import cleanup_step
from fsd_inference.exceptions import ConfigError
from fsd_inference.handlers._common import LambdaContext, require
from fsd_inference.handlers.observability import add_metrics, observed


@observed("cleanup")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    execution = require(event, "execution")
    state = event.get("state")
    if state is not None and not isinstance(state, dict):
        raise ConfigError(f"the event's 'state' must be an object, got {type(state).__name__}")
    result = cleanup_step(str(execution), state)
    add_metrics(MetricUnit.Count, ObjectsDeleted=result["deleted_objects"],
                FailedRuns=int(result["failed"]))
    return result
