"""Local Lambda: moto's function invocation routed to the project's handlers.

moto (pinned, see server.py) invokes a function through
``LambdaFunction._invoke_lambda(self, event) -> (result_json, errored, logs)``, which
in 5.2.5 runs a Docker container; local.lambda_hook routes it into a
:class:`LambdaRuntime`: a pool of warm local processes ("sandboxes"), keyed by
everything that makes a Lambda sandbox (function, code, handler, environment, timeout,
memory), so a configuration change starts fresh ones as on AWS.

- Concurrency: an invocation takes an idle sandbox of its function or starts a new
  one, never waits for one. A Map's P workers wait on each other, so a pool smaller
  than the concurrent invocations would deadlock the exchange; this one grows.
- Init once, fork per sandbox: the handler is imported once per configuration in a
  fork server (local.lambda_zygote, lambda_child.py), and each sandbox is a fork of it
  that serves invocation after invocation (importing boto3, numpy and scipy costs about
  a second and 85 MB; forks share those pages and start in milliseconds).
- Environment: what Lambda sets (``AWS_LAMBDA_FUNCTION_*``, ``AWS_REGION``,
  ``_HANDLER``), dummy credentials, ``AWS_ENDPOINT_URL`` = the moto server, the
  function's Environment variables, and a private ``TMPDIR`` per sandbox (``/tmp`` is
  per sandbox on Lambda too; the workers cache shards there).
- Timeout: the function's Timeout is enforced; an invocation that runs over has its
  process group killed, the sandbox is discarded, and the error is AWS's
  ``Sandbox.Timedout``, which the state machine retries.
- Errors: a handler's exception comes back as Lambda's error payload (``errorType`` =
  the class name), so Retry and Catch see the same error names as on AWS; a crashed
  process is ``Runtime.ExitError``, a handler that cannot be imported
  ``Runtime.ImportModuleError``.
- Logs: each sandbox writes to its own file; an invocation returns the last 4 KB of
  what it wrote (Lambda's LogResult holds 4 KB too) and copies them to moto's
  CloudWatch Logs.

IAM is not enforced, the function's Runtime and Architectures are ignored (this
machine's Python runs every handler) and MemorySize is not a limit (only reported to
the handler, which the cost model reads).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsd_inference.exceptions import FsdError
from fsd_inference.local.lambda_sandbox import FunctionSpec, Outcome, Sandbox, error_outcome
from fsd_inference.local.lambda_zygote import Zygote

CLOUDWATCH_LOG_BYTES = 256 * 1024
IDLE_RETIRE_S = 600.0  # a sandbox idle this long is stopped (Lambda recycles them too)
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "SYSTEMROOT", "VIRTUAL_ENV")


class LocalRuntimeError(FsdError):
    """The local Lambda runtime cannot run (moto's hook point moved, no runtime...)."""


# ----------------------------------------------------------------------------- hooks


@dataclass(frozen=True)
class Invocation:
    """What a hook sees before an invocation is dispatched."""

    function: FunctionSpec
    event: Any
    request_id: str


# A hook returns None to let the invocation run, or an error payload to fail it at once
# (tests inject faults with it; it may also act, e.g. corrupt an object, and return None).
InvokeHook = Callable[[Invocation], dict[str, Any] | None]


# ----------------------------------------------------------------------------- the pool


class LambdaRuntime:
    """Warm sandboxes per function; what the patched moto invokes (see the module doc)."""

    def __init__(self, endpoint_url: str, root: Path | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="fsd-lambda-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self._idle: dict[FunctionSpec, list[Sandbox]] = {}
        self._busy: set[Sandbox] = set()
        self._lock = threading.Condition()
        self._code_lock = threading.Lock()
        self._zygote_lock = threading.Lock()
        self._zygotes: dict[FunctionSpec, Zygote] = {}
        self._hooks: list[InvokeHook] = []
        self._closed = False
        self._serial = 0
        self.invocations: Counter[str] = Counter()  # by function name
        self.cold_starts: Counter[str] = Counter()  # sandboxes started
        self.inits: Counter[str] = Counter()  # handler imports (one per fork server)
        self.timeouts: Counter[str] = Counter()

    # ------------------------------------------------------------------ hooks

    def add_hook(self, hook: InvokeHook) -> None:
        with self._lock:
            self._hooks.append(hook)

    def remove_hook(self, hook: InvokeHook) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    @contextmanager
    def hooked(self, hook: InvokeHook) -> Iterator[None]:
        self.add_hook(hook)
        try:
            yield
        finally:
            self.remove_hook(hook)

    # ------------------------------------------------------------------ invoking

    def invoke(self, function: Any, event: Any) -> Outcome:
        """Run one invocation of a moto ``LambdaFunction`` to completion."""
        request_id = str(uuid.uuid4())
        if isinstance(event, str | bytes):
            event = json.loads(event or "{}")
        spec = FunctionSpec.of(function)
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            injected = hook(Invocation(spec, event, request_id))
            if injected is not None:
                injected.setdefault("requestId", request_id)
                return Outcome(json.dumps(injected), True, "fault injected by a test hook")
        try:
            sandbox = self._acquire(spec, function)
        except (LocalRuntimeError, OSError) as exc:  # stopped, or its folder went with it
            return error_outcome("Runtime.Unavailable", str(exc), request_id)
        outcome = sandbox.invoke(event, request_id)
        self._release(sandbox, outcome)
        self._save_logs(function, sandbox, outcome)
        return outcome

    def _acquire(self, spec: FunctionSpec, function: Any) -> Sandbox:
        with self._lock:
            if self._closed:
                raise LocalRuntimeError("the local Lambda runtime has stopped")
            self._retire_idle()
            self.invocations[spec.name] += 1
            idle = self._idle.get(spec, [])
            while idle:
                sandbox = idle.pop()
                if sandbox.alive:
                    self._busy.add(sandbox)
                    return sandbox
                sandbox.kill()
        sandbox = self._spawn(spec, function)
        with self._lock:
            self._busy.add(sandbox)
        return sandbox

    def _release(self, sandbox: Sandbox, outcome: Outcome) -> None:
        with self._lock:
            self._busy.discard(sandbox)
            if '"Sandbox.Timedout"' in outcome.payload:
                self.timeouts[sandbox.spec.name] += 1
            if sandbox.alive and not self._closed:
                self._idle.setdefault(sandbox.spec, []).append(sandbox)
            else:
                sandbox.kill()
            self._lock.notify_all()

    def _spawn(self, spec: FunctionSpec, function: Any) -> Sandbox:
        """A new sandbox of the function (forked at its first invocation)."""
        zygote = self._zygote(spec, function)
        with self._lock:
            self._serial += 1
            serial = self._serial
            self.cold_starts[spec.name] += 1
        home = self.root / "sandboxes" / f"{spec.name}-{serial}"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return Sandbox(spec, zygote, {"TMPDIR": str(home / "tmp")}, home / "log.txt")

    def _zygote(self, spec: FunctionSpec, function: Any) -> Zygote:
        """The function configuration's fork server, started (init) on first need."""
        code_dir = self._code_dir(spec, function)
        with self._zygote_lock:
            zygote = self._zygotes.get(spec)
            if zygote is not None and zygote.alive:
                return zygote
            if self._closed:
                raise LocalRuntimeError("the local Lambda runtime has stopped")
            self.inits[spec.name] += 1
            home = self.root / "init" / f"{spec.name}-{self.inits[spec.name]}"
            (home / "tmp").mkdir(parents=True, exist_ok=True)
            zygote = Zygote(spec.name, code_dir,
                            self._environment(spec, code_dir, home / "tmp"), home / "log.txt")
            self._zygotes[spec] = zygote  # a dead one it replaces has nothing left to stop
        return zygote

    def _environment(self, spec: FunctionSpec, code_dir: Path, tmp: Path) -> dict[str, str]:
        environment = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        environment.update({
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout_s)),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "_FSD_FUNCTION_ARN": spec.arn,
            "_HANDLER": spec.handler,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "PYTHONPATH": str(code_dir),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(tmp),
            # No X-Ray daemon here: Powertools' Tracer off unless the function says so
            "POWERTOOLS_TRACE_DISABLED": "true",
        })
        environment.update(dict(spec.environment))
        return environment

    def _code_dir(self, spec: FunctionSpec, function: Any) -> Path:
        """The function's zip, unpacked once per code version (``/var/task``)."""
        code: bytes = getattr(function, "code_bytes", b"") or b""
        if not code:
            raise LocalRuntimeError(f"function {spec.name} has no code package")
        target = self.root / "code" / hashlib.sha256(code).hexdigest()[:20]
        with self._code_lock:
            if not target.is_dir():
                staging = Path(tempfile.mkdtemp(prefix="unzip-", dir=self.root))
                try:
                    with zipfile.ZipFile(io.BytesIO(code)) as archive:
                        archive.extractall(staging)
                except zipfile.BadZipFile as exc:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise LocalRuntimeError(f"function {spec.name}: the code is not a zip "
                                            f"file ({exc})") from exc
                target.parent.mkdir(parents=True, exist_ok=True)
                staging.replace(target)
        return target

    def _retire_idle(self) -> None:
        """Stop sandboxes idle for long (called with the lock held)."""
        now = time.monotonic()
        for spec, sandboxes in self._idle.items():
            keep = []
            for sandbox in sandboxes:
                if now - sandbox.last_used > IDLE_RETIRE_S or not sandbox.alive:
                    sandbox.kill()
                else:
                    keep.append(sandbox)
            self._idle[spec] = keep

    def _save_logs(self, function: Any, sandbox: Sandbox, outcome: Outcome) -> None:
        """Copy the invocation's log tail to moto's CloudWatch Logs, as Lambda does."""
        with suppress(Exception):  # logs are a convenience; never fail an invocation
            function.logs_backend.ensure_log_group(function.logs_group_name)
            function.save_logs(outcome.logs[-CLOUDWATCH_LOG_BYTES:])

    # ------------------------------------------------------------------ lifecycle

    def prewarm(self, function: Any) -> None:
        """Start the function's init (its fork server) now, in the background: the first
        invocations find the handler imported and only fork."""
        self._zygote(FunctionSpec.of(function), function)

    def active(self) -> int:
        """Invocations running right now."""
        with self._lock:
            return len(self._busy)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation runs (stragglers of a failed block included)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy, timeout)

    def sandboxes(self) -> int:
        with self._lock:
            return len(self._busy) + sum(len(s) for s in self._idle.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            everyone = list(self._busy) + [s for group in self._idle.values() for s in group]
            self._idle.clear()
        # signal everyone first, then wait: one by one, each wait was a reap interval
        # (sandboxes) or an interpreter's exit (fork servers), about 3 s in all at the
        # end of every run
        for sandbox in everyone:
            sandbox.kill(wait=False)
        for sandbox in everyone:
            sandbox.kill()
        with self._zygote_lock:
            zygotes = list(self._zygotes.values())
            self._zygotes.clear()
        for zygote in zygotes:
            zygote.close(wait=False)
        for zygote in zygotes:
            zygote.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
