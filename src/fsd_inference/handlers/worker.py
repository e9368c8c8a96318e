"""Worker: ``{"run": <plan's run>, "block": b, "worker": p}`` (one Map item)."""

from __future__ import annotations

from typing import Any

from fsd_inference.cloud.events import WorkerEvent
from fsd_inference.cloud.schema import load
from fsd_inference.cloud.worker_step import worker_step
from fsd_inference.handlers._common import (
    LambdaContext,
    log_result,
    remaining_seconds,
    setup_logging,
)


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    setup_logging()
    parsed = load(WorkerEvent, event, "the worker event")
    result = worker_step(parsed.run, parsed.block, parsed.worker, remaining_seconds(context))
    return log_result("worker", result)
