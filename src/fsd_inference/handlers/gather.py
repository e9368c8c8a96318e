"""Gather: ``{"run": <plan's run>}`` after the last block."""

from __future__ import annotations

from typing import Any

from fsd_inference.cloud.events import GatherEvent
from fsd_inference.cloud.gather_step import gather_step
from fsd_inference.cloud.schema import load
from fsd_inference.handlers._common import LambdaContext, log_result, setup_logging


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    setup_logging()
    return log_result("gather", gather_step(load(GatherEvent, event, "the gather event").run))
