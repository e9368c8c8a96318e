"""What every handler shares: event access with clear errors, the Lambda context.
(Logs, metrics and traces: observability.py.)"""

from __future__ import annotations

from typing import Any, Protocol

from fsd_inference.exceptions import ConfigError

DEFAULT_REMAINING_S = 900.0  # outside Lambda (tests, local runs): the Lambda maximum
DEADLINE_MARGIN_S = 10.0  # kept between a worker's own deadline and Lambda's


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def require(event: Any, name: str) -> Any:
    if not isinstance(event, dict):
        raise ConfigError(f"the event must be a JSON object, got {type(event).__name__}")
    if name not in event:
        raise ConfigError(f"the event has no {name!r} (keys: {', '.join(sorted(event))})")
    return event[name]


def require_int(event: Any, name: str) -> int:
    value = require(event, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"the event's {name!r} must be an integer, got {value!r}")
    return value


def remaining_seconds(context: LambdaContext | None) -> float:
    """Seconds this invocation may still run, less a margin for the handler's own exit."""
    if context is None:
        return DEFAULT_REMAINING_S - DEADLINE_MARGIN_S
    return context.get_remaining_time_in_millis() / 1000.0 - DEADLINE_MARGIN_S
