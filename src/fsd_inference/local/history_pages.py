"""GetExecutionHistory with AWS's paging (``maxResults``, ``nextToken``, ``reverseOrder``).

moto 5.2.5 ignores all three and serialises the whole history on every call. A client
that follows a running execution (``fsd run`` polls once a second) then pays for every
event again on each poll: in the demo (about 420 events by the end) that was the
largest single cost of the server thread, which also serves every SQS call of the
workers. AWS pages the history (at most 1,000 events a call) and can return it newest
first, so a follower reads only what is new (cloud.timeline.HistoryReader). This patch
gives the embedded AWS the same parameters; without ``maxResults`` it returns the
whole history, as moto did. The token is opaque to clients (here: the offset of the
next event to return, stable while events are appended).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from fsd_inference.local.lambda_runtime import LocalRuntimeError

MAX_RESULTS = 1000  # AWS's bound for maxResults
_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}


class InvalidToken(LocalRuntimeError):
    """A nextToken this server did not hand out."""


def page(events: list[dict[str, Any]], max_results: int | None, reverse: bool,
         token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``events`` (oldest first) and the token of the next, as AWS pages.

    The token names the id of the next event to return, not an offset: events are
    appended while a follower pages newest first, and an offset into the reversed list
    would then hand out again events the previous page held.
    """
    if max_results is None and token is None:
        return list(events[::-1] if reverse else events), None
    size = min(max(1, max_results or MAX_RESULTS), MAX_RESULTS)
    try:
        start = int(token) if token else None
    except ValueError as exc:
        raise InvalidToken(f"invalid nextToken {token!r}") from exc
    if reverse:
        ordered = [e for e in reversed(events) if start is None or int(e["id"]) <= start]
    else:
        ordered = [e for e in events if start is None or int(e["id"]) >= start]
    chunk = ordered[:size]
    if len(ordered) <= size:
        return chunk, None
    return chunk, str(ordered[size]["id"])


def _get_execution_history(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.stepfunctions.exceptions import InvalidToken as MotoInvalidToken

    history = self.stepfunction_backend.get_execution_history(self._get_param("executionArn"))
    events = list(history["events"])
    max_results = self._get_param("maxResults")
    try:
        events, token = page(events, int(max_results) if max_results else None,
                             bool(self._get_param("reverseOrder")),
                             self._get_param("nextToken"))
    except InvalidToken as exc:
        raise MotoInvalidToken(str(exc)) from exc
    output: dict[str, Any] = {"events": events}
    if token is not None:
        output["nextToken"] = token
    return ActionResult(output)


def install() -> None:
    """Serve GetExecutionHistory in pages (idempotent)."""
    from moto.stepfunctions.responses import StepFunctionResponse

    check_hook_points()
    with _LOCK:
        if _ORIGINALS:
            return
        _ORIGINALS["get_execution_history"] = StepFunctionResponse.get_execution_history
        setattr(StepFunctionResponse, "get_execution_history",  # noqa: B010
                _get_execution_history)


def check_hook_points() -> None:
    """Fail loudly if the response method this patch replaces moved."""
    from moto.stepfunctions.responses import StepFunctionResponse

    method = _ORIGINALS.get("get_execution_history") or getattr(
        StepFunctionResponse, "get_execution_history", None)
    problems = []
    if method is None or list(inspect.signature(method).parameters) != ["self"]:
        problems.append("StepFunctionResponse.get_execution_history(self) is gone or changed")
    else:
        if "stepfunction_backend.get_execution_history(" not in inspect.getsource(method):
            problems.append("GetExecutionHistory no longer reads the backend's history")
    try:
        from moto.stepfunctions.exceptions import InvalidToken as _  # noqa: F401
    except ImportError:
        problems.append("moto.stepfunctions.exceptions.InvalidToken is gone")
    if problems:
        raise LocalRuntimeError("moto's Step Functions history internals moved: "
                                + "; ".join(problems))
