"""One local Lambda sandbox: a warm process that serves one function's invocations.

The process runs lambda_child.py (the inside: imports the handler once, then answers
one request at a time). This side starts it in the function's unzipped code folder
with the function's environment, writes each request to its stdin, reads the answer
from a pipe of its own (so the handler's prints cannot corrupt it), enforces the
function's Timeout (the whole process group is killed; AWS's ``Sandbox.Timedout``), and
returns the tail of what the invocation wrote to the sandbox's log file.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsd_inference.local import lambda_child

LOG_TAIL_BYTES = 4096  # Lambda's LogResult: the last 4 KB
INIT_TIMEOUT_S = 120.0  # cold start (imports) on a busy machine; Lambda allows 10 s
KILL_WAIT_S = 10.0
_BOOTSTRAP = Path(lambda_child.__file__).read_text(encoding="utf-8")


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
    """One warm process serving one function, one invocation at a time."""

    def __init__(self, spec: FunctionSpec, code_dir: Path, environment: dict[str, str],
                 log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.last_used = time.monotonic()
        self.invocations = 0
        self._buffer = b""
        self._ready = False
        read_fd, write_fd = os.pipe()
        environment = {**environment, lambda_child.RESULT_FD_ENV: str(write_fd)}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP], stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, cwd=code_dir, env=environment,
                pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        self._results = read_fd

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The next message, None at the deadline; EOFError if the process ended."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._results, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if not selector.select(remaining):
                    continue
                chunk = os.read(self._results, 1 << 16)
                if not chunk:
                    raise EOFError
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def start(self, request_id: str) -> Outcome | None:
        """Wait for the cold start; an Outcome if it failed (the sandbox is then dead)."""
        if self._ready:
            return None
        try:
            message = self._read(time.monotonic() + INIT_TIMEOUT_S)
        except EOFError:
            message = {"init_error": lambda_child.error_payload(
                "Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited "
                                     f"during init: exit status {self.process.wait()}")}
        if message is None:
            self.kill()
            return error_outcome("Sandbox.Timedout", f"RequestId: {request_id} Error: "
                                 f"init did not finish within {INIT_TIMEOUT_S:g} s", request_id)
        if "init_error" in message:
            self.kill()
            return Outcome(json.dumps({**message["init_error"], "requestId": request_id}),
                           True, "")
        self._ready = True
        return None

    def invoke(self, event: Any, request_id: str) -> Outcome:
        started = self.log_size()
        failed = self.start(request_id)
        if failed is not None:
            return Outcome(failed.payload, True, self.log_tail(started))
        self.invocations += 1
        request = {"event": event, "request_id": request_id, "timeout_s": self.spec.timeout_s}
        deadline = time.monotonic() + self.spec.timeout_s
        try:
            assert self.process.stdin is not None
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            message = self._read(deadline)
        except (EOFError, BrokenPipeError, OSError):
            code = self.process.wait()
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

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, offset: int, limit: int) -> str:
        with suppress(OSError), open(self.log_path, "rb") as log:
            size = log.seek(0, io.SEEK_END)
            log.seek(max(offset, size - limit))
            return log.read().decode("utf-8", "replace")
        return ""

    def log_tail(self, offset: int) -> str:
        return self.log_text(offset, LOG_TAIL_BYTES)

    def kill(self) -> None:
        """Kill the process group (the handler's threads and any children too)."""
        if self.alive:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(KILL_WAIT_S)
        for stream in (self.process.stdin,):
            with suppress(OSError):
                if stream is not None:
                    stream.close()
        with suppress(OSError):
            os.close(self._results)
        self._results = -1
