"""What every handler shares: the Lambda context. (Events: cloud.events; logs, metrics
and traces: observability.py.)"""

from __future__ import annotations

from typing import Protocol

DEFAULT_REMAINING_S = 900.0  # outside Lambda (tests, local runs): the Lambda maximum
DEADLINE_MARGIN_S = 10.0  # kept between a worker's own deadline and Lambda's


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def remaining_seconds(context: LambdaContext | None) -> float:
    """Seconds this invocation may still run, less a margin for the handler's own exit."""
    if context is None:
        return DEFAULT_REMAINING_S - DEADLINE_MARGIN_S
    return context.get_remaining_time_in_millis() / 1000.0 - DEADLINE_MARGIN_S
