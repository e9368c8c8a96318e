"""What every handler shares: the Lambda context and logs (events: cloud.events)."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

LOG = logging.getLogger("fsd_inference")
DEFAULT_REMAINING_S = 900.0  # outside Lambda (tests, local runs): the Lambda maximum
DEADLINE_MARGIN_S = 10.0  # kept between a worker's own deadline and Lambda's


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def setup_logging() -> None:
    """INFO for the package (Lambda's root handler already writes to CloudWatch)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    LOG.setLevel(logging.INFO)


def remaining_seconds(context: LambdaContext | None) -> float:
    """Seconds this invocation may still run, less a margin for the handler's own exit."""
    if context is None:
        return DEFAULT_REMAINING_S - DEADLINE_MARGIN_S
    return context.get_remaining_time_in_millis() / 1000.0 - DEADLINE_MARGIN_S


def log_result(step: str, result: dict[str, Any]) -> dict[str, Any]:
    LOG.info("%s: %s", step, json.dumps(result, sort_keys=True, default=str)[:2000])
    return result
