"""The inside of the local Lambda runtime: one fork server per function configuration.

Started by :mod:`fsd_inference.local.lambda_zygote` as ``python -c <this file's source>``
in the function's unzipped code folder (first on ``sys.path``, as ``/var/task`` is on
Lambda), with the function's environment. Standard library only, so it runs whatever
the code folder holds.

The process imports the handler named by ``_HANDLER`` once (the cold start: boto3,
numpy and scipy cost about a second and 85 MB), freezes what it imported out of the
garbage collector's reach, reports ready, and then forks one process per sandbox. A
sandbox shares the imported modules' memory with the fork server (copy on write) and
starts in milliseconds; Lambda's SnapStart does the same (initialise once, resume
clones), and the same caveat applies: what the import created is shared by every
sandbox, so the random generators are reseeded in each.

The control channel (a Unix socket, fd ``_FSD_ZYGOTE_FD``) carries JSON lines out:
``{"ready": true}`` or ``{"init_error": {...}}`` once, ``{"spawned": id, "pid": n}`` per
fork and ``{"exited": pid, "status": code}`` per sandbox that ended; and spawn requests
in: a length-prefixed JSON object ``{"spawn": id, "env": {...}}`` followed by one byte
carrying two file descriptors (the sandbox's channel and its log file).

A sandbox serves invocations one at a time on its channel (a Unix socket): requests
are JSON lines ``{"event", "request_id", "timeout_s"}``, answers ``{"ready": true}`` once,
then ``{"result": "<json>"}`` or ``{"error": {...}}`` per request. Its stdout and stderr
(prints, logging, tracebacks) go to its log file. An error is the payload the Lambda
Python runtime returns (``errorMessage``, ``errorType`` = the exception's class name,
``requestId``, ``stackTrace``), so Step Functions matches Retry and Catch rules on the
class name, as it does on AWS.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from typing import Any, TextIO

ZYGOTE_FD_ENV = "_FSD_ZYGOTE_FD"
HANDLER_ENV = "_HANDLER"
HEADER = struct.Struct("!I")  # length of a spawn request
REAP_EVERY_S = 0.2


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


# ----------------------------------------------------------------------------- a sandbox


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


def _sandbox(handler: Any, channel_fd: int, log_fd: int, environment: dict[str, str]) -> None:
    """The forked child: its own process group, log, environment and /tmp; then serve."""
    os.setpgid(0, 0)  # the runtime kills the whole group (the handler's children too)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for fd in (devnull, log_fd):
        os.close(fd)
    os.environ.update(environment)
    tempfile.tempdir = None  # TMPDIR is per sandbox: let tempfile read it again
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    channel = socket.socket(fileno=channel_fd)
    requests = channel.makefile("r", encoding="utf-8")
    answers = channel.makefile("w", encoding="utf-8")
    _send(answers, {"ready": True})
    for line in requests:
        if line.strip():
            _send(answers, _invoke(handler, json.loads(line)))


# ----------------------------------------------------------------------------- the server


def _receive_exactly(control: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = control.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _fork(handler: Any, control: socket.socket, out: TextIO) -> None:
    """One spawn request: receive it and its descriptors, fork, report the pid."""
    (size,) = HEADER.unpack(_receive_exactly(control, HEADER.size))
    request = json.loads(_receive_exactly(control, size))
    _, fds, _, _ = socket.recv_fds(control, 1, 2)
    channel_fd, log_fd = fds
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            control.close()
            _sandbox(handler, channel_fd, log_fd, request["env"])
        except BaseException:  # a sandbox must never return into the server's loop
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    # also here, so that no window exists in which a kill misses the child (OSError: the
    # child did it first, or already ended)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    os.close(channel_fd)
    os.close(log_fd)
    _send(out, {"spawned": request["spawn"], "pid": pid})


def _reap(out: TextIO) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(out, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def main() -> int:
    control = socket.socket(fileno=int(os.environ.pop(ZYGOTE_FD_ENV)))
    control.set_inheritable(False)  # processes the handler starts must not hold it open
    out = control.makefile("w", encoding="utf-8")
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
    gc.collect()
    gc.freeze()  # imported objects stay shared: the children's collector leaves them be
    _send(out, {"ready": True})
    with selectors.DefaultSelector() as selector:
        selector.register(control, selectors.EVENT_READ)
        while True:
            if selector.select(REAP_EVERY_S):
                try:
                    _fork(handler, control, out)
                except EOFError:  # the runtime closed the channel: it is done with us
                    return 0
            _reap(out)


if __name__ == "__main__":
    sys.exit(main())
