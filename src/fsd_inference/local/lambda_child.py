"""The inside of one local Lambda sandbox: a warm process that runs one handler.

Started by :mod:`fsd_inference.local.lambda_runtime` as ``python -c <this file's source>``
in the function's unzipped code folder (first on ``sys.path``, as ``/var/task`` is on
Lambda), with the function's environment. Standard library only, so it runs whatever
the code folder holds. It imports the handler named by ``_HANDLER`` once (the cold
start), reports ready, then serves invocations one at a time for as long as it lives:

- requests arrive on stdin, one JSON line each: ``{"event", "request_id", "timeout_s"}``;
- answers go to the file descriptor named by ``_FSD_RESULT_FD``, one JSON line each:
  ``{"ready": true}`` or ``{"init_error": {...}}`` once, then ``{"result": "<json>"}``
  or ``{"error": {...}}`` per request;
- stdout and stderr (prints, logging, tracebacks) go to the sandbox's log file.

An error is the payload the Lambda Python runtime returns (``errorMessage``,
``errorType`` = the exception's class name, ``requestId``, ``stackTrace``), so Step
Functions matches Retry and Catch rules on the class name, as it does on AWS.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any, TextIO

RESULT_FD_ENV = "_FSD_RESULT_FD"
HANDLER_ENV = "_HANDLER"


class Context:
    """The attributes and method of the Lambda Python runtime's context object."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("_FSD_FUNCTION_ARN", "")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_payload(error_type: str, message: str, request_id: str = "",
                  exc: BaseException | None = None) -> dict[str, Any]:
    trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)) if exc else []
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": trace}


def _send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _invoke(handler: Any, request: dict[str, Any]) -> dict[str, Any]:
    request_id = str(request.get("request_id", ""))
    context = Context(request_id, float(request["timeout_s"]))
    print(f"START RequestId: {request_id}", flush=True)
    try:
        result = handler(request.get("event"), context)
    except Exception as exc:  # the runtime reports any exception as the invocation's error
        traceback.print_exc()
        return {"error": error_payload(type(exc).__name__, str(exc), request_id, exc)}
    finally:
        print(f"END RequestId: {request_id}", flush=True)
    try:
        return {"result": json.dumps(result)}
    except (TypeError, ValueError) as exc:
        return {"error": error_payload("Runtime.MarshalError",
                                       f"Unable to marshal response: {exc}", request_id)}


def main() -> int:
    fd = int(os.environ.pop(RESULT_FD_ENV))
    os.set_inheritable(fd, False)  # processes the handler starts must not hold it open
    out = os.fdopen(fd, "w", encoding="utf-8")
    name = os.environ.get(HANDLER_ENV, "")
    module, _, attribute = name.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module), attribute)
    except Exception as exc:
        traceback.print_exc()
        kind = "Runtime.HandlerNotFound" if isinstance(exc, AttributeError) else \
            "Runtime.ImportModuleError"
        _send(out, {"init_error": error_payload(
            kind, f"Unable to import module '{module}' or find '{attribute}': {exc}")})
        return 1
    _send(out, {"ready": True})
    for line in sys.stdin:
        if line.strip():
            _send(out, _invoke(handler, json.loads(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
