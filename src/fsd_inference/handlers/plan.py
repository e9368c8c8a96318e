"""Plan: ``{"execution": $$.Execution.Name, "request": <execution input>}``."""

from __future__ import annotations

from typing import Any

from fsd_inference.cloud.plan_step import plan_step
from fsd_inference.handlers._common import LambdaContext, log_result, require, setup_logging


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    setup_logging()
    execution = require(event, "execution")
    return log_result("plan", plan_step(str(execution), require(event, "request")))
