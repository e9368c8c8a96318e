"""Executions of moto's Step Functions made to behave as AWS's (moto 5.2.5 only).

Three fixes, each checked against the pinned moto (:func:`check_hook_points`) and each
with a test that runs moto's own behaviour and fails loudly the day moto fixed it:

- ``States.*`` error names passed on. moto wraps an error name that comes from data in
  ``CustomErrorName``, which refuses names starting with ``States.``: a Map iteration
  failing with ``States.Timeout`` (a Task's TimeoutSeconds) or
  ``States.DataLimitExceeded`` fails the whole Map with ``States.Runtime``, so a Catch
  or Retry for the real name never matches; and a Fail state whose ErrorPath names a
  caught ``States.*`` error (the failure path after a Distributed Map's
  ``States.ExceedToleratedFailureThreshold``) fails with ``States.Runtime`` instead.
  Such names become what the interpreter calls them everywhere else
  (``StatesErrorName``), in both places (:data:`NAMING_MODULES`).
- Unnamed executions. StartExecution's name is optional (AWS makes a UUID); moto names
  such an execution "None", so the second unnamed one fails with
  ExecutionAlreadyExists. It gets a UUID.
- Stopped executions. StopExecution makes an execution ABORTED at once on AWS; moto
  keeps it RUNNING until the state it is in ends, and a failure that ends that state
  afterwards (a worker whose queues the cleanup deleted) turned it FAILED. It is
  ABORTED at once, and a stopped program no longer takes an error or a timeout.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsd_inference.local.lambda_runtime import LocalRuntimeError

ITERATION_MODULE = ("moto.stepfunctions.parser.asl.component.state.exec.state_map."
                    "iteration.iteration_worker")
FAIL_MODULE = "moto.stepfunctions.parser.asl.component.state.fail.state_fail"
# module -> how it names an error from data (checked in its source)
NAMING_MODULES = {ITERATION_MODULE: "CustomErrorName(error_name=error_name)",
                  FAIL_MODULE: "CustomErrorName(error_value)"}
ERROR_NAME_MODULE = "moto.stepfunctions.parser.asl.component.common.error_name"
_PATCH_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}


# ----------------------------------------------------------------------------- error names


def _error_name(error_name: str | None) -> Any:
    """An error name from data (an iteration's error, a Fail state's ErrorPath),
    ``States.*`` names included."""
    custom = importlib.import_module(f"{ERROR_NAME_MODULE}.custom_error_name")
    states = importlib.import_module(f"{ERROR_NAME_MODULE}.states_error_name")
    base = importlib.import_module(f"{ERROR_NAME_MODULE}.error_name")
    if error_name is not None and error_name.startswith(custom.ILLEGAL_CUSTOM_ERROR_PREFIX):
        try:
            return states.StatesErrorName.from_name(error_name)
        except ValueError:  # a States.* name the interpreter does not know: keep it
            return base.ErrorName(error_name)
    return custom.CustomErrorName(error_name)


def patch_error_names() -> None:
    """``States.*`` names reach Retry, Catch and the execution's error (idempotent)."""
    with _PATCH_LOCK:
        for name in NAMING_MODULES:
            if name in _ORIGINALS:
                continue
            module = importlib.import_module(name)
            _ORIGINALS[name] = getattr(module, "CustomErrorName")  # noqa: B009
            setattr(module, "CustomErrorName", _error_name)  # noqa: B010


@contextmanager
def unpatched_error_names() -> Iterator[None]:
    """moto's own behaviour for the block (tests show the bug is still there)."""
    modules = {name: importlib.import_module(name) for name in NAMING_MODULES}
    with _PATCH_LOCK:
        current = {name: getattr(m, "CustomErrorName") for name, m in modules.items()}  # noqa: B009
        for name, module in modules.items():
            setattr(module, "CustomErrorName", _ORIGINALS.get(name, current[name]))  # noqa: B010
    try:
        yield
    finally:
        with _PATCH_LOCK:
            for name, module in modules.items():
                setattr(module, "CustomErrorName", current[name])  # noqa: B010


# ----------------------------------------------------------------------------- names


def _start_execution(self: Any, state_machine_arn: str, name: Any = None,
                     execution_input: Any = None, trace_header: Any = None) -> Any:
    """moto's start_execution, with AWS's default name (a UUID) when none is given."""
    return _ORIGINALS["start_execution"](self, state_machine_arn, name or str(uuid.uuid4()),
                                         execution_input, trace_header)


def patch_execution_names() -> None:
    """Unnamed executions get a UUID, as on AWS (idempotent)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    with _PATCH_LOCK:
        if "start_execution" in _ORIGINALS:
            return
        _ORIGINALS["start_execution"] = StepFunctionsParserBackend.start_execution
        setattr(StepFunctionsParserBackend, "start_execution", _start_execution)  # noqa: B010


@contextmanager
def unpatched_execution_names() -> Iterator[None]:
    """moto's own start_execution for the block (tests show the bug is still there)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    with _PATCH_LOCK:
        current = StepFunctionsParserBackend.__dict__["start_execution"]
        setattr(StepFunctionsParserBackend, "start_execution",  # noqa: B010
                _ORIGINALS.get("start_execution", current))
    try:
        yield
    finally:
        with _PATCH_LOCK:
            setattr(StepFunctionsParserBackend, "start_execution", current)  # noqa: B010


# ----------------------------------------------------------------------------- stops


def _stop(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
    """moto's Execution.stop, and the execution is ABORTED from now on."""
    from moto.stepfunctions.parser.api import ExecutionStatus

    _ORIGINALS["stop"](self, stop_date, error, cause)
    if self.exec_status == ExecutionStatus.RUNNING:
        self.exec_status, self.stop_date = ExecutionStatus.ABORTED, stop_date


def _unless_stopped(name: str) -> Any:
    def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
        from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

        if isinstance(self._program_state, ProgramStopped):
            return  # stopped is final, as on AWS
        _ORIGINALS[name](self, *args, **kwargs)

    return guarded


def patch_stops() -> None:
    """Stopped executions are ABORTED at once and stay so (idempotent)."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.backend.execution import Execution

    with _PATCH_LOCK:
        if "stop" in _ORIGINALS:
            return
        _ORIGINALS["stop"] = Execution.__dict__["stop"]
        setattr(Execution, "stop", _stop)  # noqa: B010
        for name in ("set_error", "set_timed_out"):
            _ORIGINALS[name] = Environment.__dict__[name]
            setattr(Environment, name, _unless_stopped(name))


@contextmanager
def unpatched_stops() -> Iterator[None]:
    """moto's own behaviour for the block (tests show the bug is still there)."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.backend.execution import Execution

    owners = {"stop": Execution, "set_error": Environment, "set_timed_out": Environment}
    with _PATCH_LOCK:
        current = {name: owner.__dict__[name] for name, owner in owners.items()}
        for name, owner in owners.items():
            setattr(owner, name, _ORIGINALS.get(name, current[name]))
    try:
        yield
    finally:
        with _PATCH_LOCK:
            for name, owner in owners.items():
                setattr(owner, name, current[name])


# ----------------------------------------------------------------------------- all


def patch() -> None:
    """Apply the three fixes (idempotent); check_hook_points first."""
    check_hook_points()
    patch_error_names()
    patch_execution_names()
    patch_stops()


def check_hook_points() -> None:
    """Fail loudly if the pinned moto internals these fixes rely on moved."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.backend.execution import Execution
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    problems = []
    for name, call in NAMING_MODULES.items():
        module = importlib.import_module(name)
        if call not in inspect.getsource(module):
            problems.append(f"{name} no longer names errors with {call}")
        if not hasattr(module, "CustomErrorName"):
            problems.append(f"{name} no longer imports CustomErrorName")
    start = _ORIGINALS.get("start_execution") or StepFunctionsParserBackend.start_execution
    if list(inspect.signature(start).parameters) != \
            ["self", "state_machine_arn", "name", "execution_input", "trace_header"]:
        problems.append("StepFunctionsParserBackend.start_execution's parameters changed")
    stop = _ORIGINALS.get("stop") or Execution.__dict__.get("stop")
    if stop is None or list(inspect.signature(stop).parameters) != \
            ["self", "stop_date", "error", "cause"]:
        problems.append("parser Execution.stop(self, stop_date, error, cause) changed")
    for name in ("set_error", "set_timed_out"):
        method = _ORIGINALS.get(name) or Environment.__dict__.get(name)
        if method is None or "_program_state" not in inspect.getsource(method):
            problems.append(f"Environment.{name} no longer sets _program_state")
    if problems:
        raise LocalRuntimeError("moto's Step Functions execution internals moved: " +
                                "; ".join(problems))
