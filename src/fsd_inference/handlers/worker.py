"""Worker: ``{"run": <plan's run>, "block": b, "worker": p}`` (one Map item)."""

from __future__ import annotations

from typing import Any

from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.worker_step import worker_step
from fsd_inference.handlers._common import (
    LambdaContext,
    log_result,
    remaining_seconds,
    require,
    require_int,
    setup_logging,
)


def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    setup_logging()
    run = RunInfo.from_dict(require(event, "run"))
    result = worker_step(run, require_int(event, "block"), require_int(event, "worker"),
                         remaining_seconds(context))
    return log_result("worker", result)
