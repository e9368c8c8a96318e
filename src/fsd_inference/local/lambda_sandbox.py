"""One local Lambda sandbox: a warm process that serves one function's invocations.

The process is forked by the function's fork server (lambda_zygote.py; its inside is
lambda_child.py), after the handler was imported there once, with this sandbox's own
log file and /tmp. This side writes each request to a socket of its own (so the
handler's prints cannot corrupt the answers), enforces the function's Timeout (the
whole process group is killed; AWS's ``Sandbox.Timedout``), and returns the tail of
what the invocation wrote to the sandbox's log file.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import socket
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsd_inference.local import lambda_child
from fsd_inference.local.lambda_zygote import Zygote, ZygoteError

LOG_TAIL_BYTES = 4096  # Lambda's LogResult: the last 4 KB
INIT_TIMEOUT_S = 120.0  # cold start (imports) on a busy machine; Lambda allows 10 s


@dataclass(frozen=True)
class FunctionSpec:
    """What identifies a sandbox: change any of it and new sandboxes start."""

    name: str
    arn: str
    handler: str
    timeout_s: float
    memory_mb: int
    region: str
    version: str
    code_sha256: str
    environment: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, function: Any) -> FunctionSpec:
        """From a moto ``LambdaFunction``."""
        variables = function.environment_vars or {}
        return cls(
            name=str(function.function_name), arn=str(function.function_arn),
            handler=str(function.handler or ""), timeout_s=float(function.timeout or 3),
            memory_mb=int(function.memory_size or 128), region=str(function.region),
            version=str(function.version), code_sha256=str(function.code_sha_256 or ""),
            environment=tuple(sorted((str(k), str(v)) for k, v in variables.items())),
        )


@dataclass(frozen=True)
class Outcome:
    """One invocation's result, as moto's ``_invoke_lambda`` returns it."""

    payload: str
    errored: bool
    logs: str

    def as_tuple(self) -> tuple[str, bool, str]:
        return self.payload, self.errored, self.logs


def error_outcome(error_type: str, message: str, request_id: str, logs: str = "") -> Outcome:
    payload = lambda_child.error_payload(error_type, message, request_id)
    return Outcome(json.dumps(payload), True, logs)


class Sandbox:
    """One warm process serving one function, one invocation at a time.

    Forked by the function's :class:`Zygote` when it first serves (``start``), so a
    sandbox that was never used costs nothing.
    """

    def __init__(self, spec: FunctionSpec, zygote: Zygote, environment: dict[str, str],
                 log_path: Path) -> None:
        self.spec = spec
        self.zygote = zygote
        self.environment = environment  # what differs from the zygote's (TMPDIR)
        self.log_path = log_path
        self.last_used = time.monotonic()
        self.invocations = 0
        self.pid: int | None = None
        self._channel: socket.socket | None = None
        self._buffer = b""
        self._killed = False
        log_path.touch()

    @property
    def alive(self) -> bool:
        if self._killed:
            return False
        return self.pid is None or not self.zygote.exited(self.pid)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The next message, None at the deadline; EOFError if the process ended."""
        assert self._channel is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._channel, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if not selector.select(remaining):
                    continue
                chunk = self._channel.recv(1 << 16)
                if not chunk:
                    raise EOFError
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def start(self, request_id: str) -> Outcome | None:
        """Fork the sandbox (after the function's init); an Outcome if that failed."""
        if self.pid is not None:
            return None
        deadline = time.monotonic() + INIT_TIMEOUT_S
        try:
            init_error = self.zygote.wait_ready(INIT_TIMEOUT_S)
        except ZygoteError as exc:
            self._killed = True
            return error_outcome("Sandbox.Timedout", f"RequestId: {request_id} Error: {exc}",
                                 request_id, self.zygote_log())
        if init_error is not None:
            self._killed = True
            return Outcome(json.dumps({**init_error, "requestId": request_id}), True,
                           self.zygote_log())
        ours, theirs = socket.socketpair()
        try:
            with open(self.log_path, "ab") as log:
                self.pid = self.zygote.spawn(self.environment, theirs, log.fileno(),
                                             INIT_TIMEOUT_S)
        except ZygoteError as exc:
            ours.close()
            self._killed = True
            return error_outcome("Runtime.Unavailable", str(exc), request_id)
        finally:
            theirs.close()
        self._channel = ours
        try:
            ready = self._read(deadline)
        except EOFError:
            ready = None
        if ready is None:
            self.kill()
            return error_outcome("Runtime.ExitError", f"RequestId: {request_id} Error: the "
                                 f"sandbox did not start", request_id, self.log_tail(0))
        return None

    def invoke(self, event: Any, request_id: str) -> Outcome:
        started = self.log_size()
        failed = self.start(request_id)
        if failed is not None:
            return failed
        assert self._channel is not None and self.pid is not None
        self.invocations += 1
        request = {"event": event, "request_id": request_id, "timeout_s": self.spec.timeout_s}
        deadline = time.monotonic() + self.spec.timeout_s
        try:
            self._channel.sendall((json.dumps(request) + "\n").encode())
            message = self._read(deadline)
        except (EOFError, OSError):
            code = self.zygote.exit_status(self.pid)
            self.kill()
            return error_outcome("Runtime.ExitError", f"RequestId: {request_id} Error: "
                                 f"Runtime exited with error: exit status {code}", request_id,
                                 self.log_tail(started))
        finally:
            self.last_used = time.monotonic()
        if message is None:
            self.kill()
            note = f"Task timed out after {self.spec.timeout_s:.2f} seconds"
            with open(self.log_path, "ab") as log:
                log.write(f"{request_id} {note}\n".encode())
            return error_outcome("Sandbox.Timedout", f"RequestId: {request_id} Error: {note}",
                                 request_id, self.log_tail(started))
        if "error" in message:
            return Outcome(json.dumps(message["error"]), True, self.log_tail(started))
        return Outcome(str(message["result"]), False, self.log_tail(started))

    def zygote_log(self) -> str:
        """The tail of the function's init log (an init error's traceback)."""
        return _tail(self.zygote.log_path, 0, LOG_TAIL_BYTES)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, offset: int) -> str:
        return _tail(self.log_path, offset, LOG_TAIL_BYTES)

    def kill(self, wait: bool = True) -> None:
        """Kill the process group (the handler's threads and any children too); without
        ``wait``, only send the signal (kill() again to wait and release)."""
        self._killed = True
        if self.pid is not None and not self.zygote.exited(self.pid):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            if not wait:
                return
            self.zygote.exit_status(self.pid)
        if self._channel is not None:
            with suppress(OSError):
                self._channel.close()
            self._channel = None


def _tail(path: Path, offset: int, limit: int) -> str:
    """What a log file holds from ``offset`` on, at most its last ``limit`` bytes."""
    with suppress(OSError), open(path, "rb") as log:
        size = log.seek(0, io.SEEK_END)
        log.seek(max(offset, size - limit))
        return log.read().decode("utf-8", "replace")
    return ""
