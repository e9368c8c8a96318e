"""moto's Distributed Map replaced by one with AWS's semantics (moto 5.2.5 only).

What moto 5.2.5 does with ``ProcessorConfig.Mode: DISTRIBUTED`` (read in
``DistributedIterationComponent._map_run`` and ``DistributedItemProcessorWorker``):
it evaluates the item processor inline, in threads of the parent execution (as many as
MaxConcurrency, or one per item when it is 0), and a failed item only bumps a counter:
its output becomes null and the Map *succeeds*. ``ToleratedFailurePercentage`` and
``ToleratedFailureCount`` are parsed and never applied, and no child execution exists.
So a block whose worker failed would go on to the next block, which then fails on a
missing checkpoint, instead of the Map's Retry and Catch seeing the failure (measured:
62 workers, one timed out waiting for a cold peer, the next block failed reading its
checkpoint).

:func:`patch` makes ``_map_run`` run a local.map_run.MapRun (child executions,
concurrency, the tolerated failure threshold, aborts) and wraps
``StateMap.from_state_props`` to note which tolerances a Map declares. Both hook points
are checked (:func:`check_hook_points`; a test also runs moto's own Map and fails
loudly the day moto applies the threshold itself).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsd_inference.local.lambda_runtime import LocalRuntimeError
from fsd_inference.local.map_run import TOLERANCE_DECLARED, MapRun

_MODULE = "moto.stepfunctions.parser.asl.component.state.exec.state_map"
_COMPONENT = f"{_MODULE}.iteration.distributed_iteration_component"
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}


def run_map(self: Any, env: Any, eval_input: Any) -> None:
    """Replaces moto's ``DistributedIterationComponent._map_run`` (see the module doc)."""
    items: list[Any] = env.stack.pop()
    env.stack.append(MapRun(self, env, eval_input, items).execute())


def _from_state_props(self: Any, state_props: Any) -> None:
    """moto's StateMap.from_state_props, then note which tolerances the state declares."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.tolerated_failure import (
        ToleratedFailureCountDecl,
        ToleratedFailurePercentageDecl,
    )

    _ORIGINALS["from_state_props"](self, state_props)
    setattr(self.iteration_component, TOLERANCE_DECLARED,
            (state_props.get(ToleratedFailureCountDecl) is not None,
             state_props.get(ToleratedFailurePercentageDecl) is not None))


def _classes() -> tuple[Any, Any]:
    component = importlib.import_module(_COMPONENT).DistributedIterationComponent
    state_map = importlib.import_module(f"{_MODULE}.state_map").StateMap
    return component, state_map


def patch() -> None:
    """Install run_map (idempotent); check_hook_points first."""
    check_hook_points()
    component, state_map = _classes()
    with _LOCK:
        if _ORIGINALS:
            return
        _ORIGINALS["map_run"] = component.__dict__["_map_run"]
        _ORIGINALS["from_state_props"] = state_map.__dict__["from_state_props"]
        setattr(component, "_map_run", run_map)  # noqa: B010
        setattr(state_map, "from_state_props", _from_state_props)  # noqa: B010


@contextmanager
def unpatched() -> Iterator[None]:
    """moto's own Distributed Map for the block (tests show what it still does)."""
    component, _ = _classes()
    with _LOCK:
        current = component.__dict__["_map_run"]
        setattr(component, "_map_run", _ORIGINALS.get("map_run", current))  # noqa: B010
    try:
        yield
    finally:
        with _LOCK:
            setattr(component, "_map_run", current)  # noqa: B010


def check_hook_points() -> None:
    """Fail loudly if the moto internals the Distributed Map hook relies on moved."""
    component, state_map = _classes()
    problems = []
    map_run = _ORIGINALS.get("map_run") or component.__dict__.get("_map_run")
    if map_run is None or list(inspect.signature(map_run).parameters) != \
            ["self", "env", "eval_input"]:
        problems.append("DistributedIterationComponent._map_run(self, env, eval_input) "
                        "is gone or changed")
    body = inspect.getsource(component._eval_body)
    for needle in ("self._map_run(env=env, eval_input=eval_input)", "MapRunFailed",
                   "extract_error_cause_pair"):
        if needle not in body:
            problems.append(f"DistributedIterationComponent._eval_body no longer has "
                            f"{needle!r}")
    props = inspect.getsource(_ORIGINALS.get("from_state_props") or
                              state_map.from_state_props)
    for needle in ("ToleratedFailureCountDecl", "ToleratedFailurePercentageDecl",
                   "self.iteration_component ="):
        if needle not in props:
            problems.append(f"StateMap.from_state_props no longer has {needle!r}")
    execution = inspect.getsource(state_map._eval_execution)
    for needle in ("MapRunRecord(", "tolerated_failure_percentage=", "max_concurrency="):
        if needle not in execution:
            problems.append(f"StateMap._eval_execution no longer has {needle!r}")
    if problems:
        raise LocalRuntimeError("moto's Distributed Map internals moved: " +
                                "; ".join(problems))
