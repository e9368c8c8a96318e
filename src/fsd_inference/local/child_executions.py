"""The child executions of a local Distributed Map, served like executions on AWS.

On AWS every item of a Distributed Map runs as a child execution of its own: a name,
an ARN under the Map Run (``execution:{machine}/{label}:{name}``), a status, an input,
an output or an error and cause, and a history separate from the parent's. The API
reaches them like any execution: ``DescribeExecution``, ``GetExecutionHistory`` and
``StopExecution`` take their ARN, and ``ListExecutions(mapRunArn=...)`` lists a Map
Run's children (that is how a client finds which worker of a failed block failed).

local.map_run starts them; this module keeps them (:data:`REGISTRY`, by ARN) and
patches the pinned moto (5.2.5) so those four calls find them. Each patch is checked
by :func:`check_hook_points` (and a test) and falls through to moto's own method for
every other execution.
"""

from __future__ import annotations

import datetime
import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from fsd_inference.local.lambda_runtime import LocalRuntimeError

TERMINAL = ("SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT")
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}


class ChildExecution:
    """One item of a Distributed Map run as its own execution (status set by map_run)."""

    def __init__(self, name: str, arn: str, state_machine_arn: str, map_run_arn: str,
                 input_value: Any) -> None:
        self.name = name
        self.execution_arn = arn
        self.state_machine_arn = state_machine_arn
        self.map_run_arn = map_run_arn
        self.input_value = input_value
        self.execution_input = json.dumps(input_value, separators=(",", ":"))
        self.start_date = datetime.datetime.now(tz=datetime.UTC)
        self.stop_date: datetime.datetime | None = None
        self.status = "RUNNING"
        self.output: Any = None
        self.output_details = {"included": True}
        self.error: str | None = None
        self.cause: str | None = None
        self.env: Any = None  # moto's Environment of the child, once it runs
        self._stop: Callable[[str, str], None] | None = None

    def finish(self, status: str, output: Any = None, error: str | None = None,
               cause: str | None = None) -> bool:
        """Record the end (once; an execution aborted by its Map Run stays ABORTED)."""
        with _LOCK:
            if self.status in TERMINAL:
                return False
            self.status, self.output, self.error, self.cause = status, output, error, cause
            self.stop_date = datetime.datetime.now(tz=datetime.UTC)
            return True

    def on_stop(self, stop: Callable[[str, str], None]) -> None:
        self._stop = stop

    def stop(self, error: str = "", cause: str = "") -> bool:
        """Abort: the status is ABORTED at once, its state machine stops after the state
        it is in (a running Lambda invocation finishes, as on AWS)."""
        if not self.finish("ABORTED", error=error or None, cause=cause or None):
            return False
        if self._stop is not None:
            self._stop(error, cause)
        return True

    def to_history_output(self) -> dict[str, Any]:
        events = self.env.event_manager.get_event_history() if self.env is not None else []
        return {"events": events}

    def list_item(self) -> dict[str, Any]:
        item = {"executionArn": self.execution_arn, "name": self.name,
                "startDate": self.start_date, "stateMachineArn": self.state_machine_arn,
                "mapRunArn": self.map_run_arn, "status": self.status}
        if self.stop_date is not None:
            item["stopDate"] = self.stop_date
        return item


REGISTRY: dict[str, ChildExecution] = {}


def register(child: ChildExecution) -> None:
    with _LOCK:
        REGISTRY[child.execution_arn] = child


def children_of(map_run_arn: str) -> list[ChildExecution]:
    with _LOCK:
        return [c for c in REGISTRY.values() if c.map_run_arn == map_run_arn]


# ----------------------------------------------------------------------------- API patches


def _describe_execution(self: Any, execution_arn: str) -> Any:
    child = REGISTRY.get(execution_arn)
    if child is not None:
        return child
    return _ORIGINALS["describe_execution"](self, execution_arn)


def _stop_execution(self: Any, execution_arn: str) -> Any:
    child = REGISTRY.get(execution_arn)
    if child is not None:
        child.stop()
        return child
    return _ORIGINALS["stop_execution"](self, execution_arn)


def _list_executions(self: Any) -> Any:
    """ListExecutions: a Map Run's children when ``mapRunArn`` is given (moto's own
    method requires ``stateMachineArn``)."""
    map_run_arn = self._get_param("mapRunArn")
    if not map_run_arn:
        return _ORIGINALS["list_executions"](self)
    from moto.core.responses import ActionResult

    status = self._get_param("statusFilter")
    children = sorted(children_of(map_run_arn), key=lambda c: c.start_date, reverse=True)
    return ActionResult({"executions": [c.list_item() for c in children
                                        if not status or c.status == status]})


def install() -> None:
    """Serve child executions through moto's Step Functions API (idempotent)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    check_hook_points()
    with _LOCK:
        if _ORIGINALS:
            return
        _ORIGINALS["describe_execution"] = StepFunctionsParserBackend.describe_execution
        _ORIGINALS["stop_execution"] = StepFunctionsParserBackend.stop_execution
        _ORIGINALS["list_executions"] = StepFunctionResponse.list_executions
        setattr(StepFunctionsParserBackend, "describe_execution",  # noqa: B010
                _describe_execution)
        setattr(StepFunctionsParserBackend, "stop_execution", _stop_execution)  # noqa: B010
        setattr(StepFunctionResponse, "list_executions", _list_executions)  # noqa: B010


def check_hook_points() -> None:
    """Fail loudly if the moto internals these patches replace moved."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    problems = []
    for owner, name, parameters in (
            (StepFunctionsParserBackend, "describe_execution", ["self", "execution_arn"]),
            (StepFunctionsParserBackend, "stop_execution", ["self", "execution_arn"]),
            (StepFunctionResponse, "list_executions", ["self"])):
        method = _ORIGINALS.get(name) or getattr(owner, name, None)
        if method is None or list(inspect.signature(method).parameters) != parameters:
            problems.append(f"{owner.__name__}.{name}{parameters} is gone or changed")
    history = inspect.getsource(StepFunctionsParserBackend.get_execution_history)
    if "self.describe_execution(" not in history or "to_history_output()" not in history:
        problems.append("get_execution_history no longer reads describe_execution("
                        ").to_history_output()")
    describe = inspect.getsource(StepFunctionResponse.describe_execution)
    for attribute in ("execution_input", "state_machine_arn", "output_details", "cause"):
        if f"execution.{attribute}" not in describe:
            problems.append(f"DescribeExecution no longer reads execution.{attribute}")
    if problems:
        raise LocalRuntimeError("moto's Step Functions API internals moved (child "
                                "executions): " + "; ".join(problems))
