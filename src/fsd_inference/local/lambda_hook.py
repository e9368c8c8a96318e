"""The hook that routes moto's Lambda invocations to a local LambdaRuntime.

moto 5.2.5 invokes a function through ``LambdaFunction._invoke_lambda(self, event) ->
(result_json, errored, logs)`` (a Docker container). :func:`install` replaces it, for
the whole process, with a router into the one installed
:class:`~fsd_inference.local.lambda_runtime.LambdaRuntime`; :func:`hook_target` checks
first that the method is where and what this expects (a test calls it too).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsd_inference.local.lambda_runtime import LambdaRuntime, LocalRuntimeError
from fsd_inference.local.lambda_sandbox import error_outcome

HOOK_MODULE = "moto.awslambda.models"
HOOK_CLASS = "LambdaFunction"
HOOK_METHOD = "_invoke_lambda"

_ACTIVE: LambdaRuntime | None = None
_ORIGINAL: Any = None
_INSTALL_LOCK = threading.Lock()


def hook_target() -> Any:
    """moto's LambdaFunction, after checking that the hook point is where we expect it.

    Fails loudly (LocalRuntimeError) if moto moved it: the method must exist with the
    signature ``(self, event=None)`` and ``LambdaFunction.invoke`` must call it.
    """
    module = importlib.import_module(HOOK_MODULE)
    owner = getattr(module, HOOK_CLASS, None)
    method = getattr(owner, HOOK_METHOD, None)
    if owner is None or method is None:
        raise LocalRuntimeError(f"moto has no {HOOK_MODULE}.{HOOK_CLASS}.{HOOK_METHOD}: the "
                                f"local Lambda hook point moved (pin moto to 5.2.5)")
    original = _ORIGINAL or method
    parameters = list(inspect.signature(original).parameters)
    invoke_source = inspect.getsource(owner.invoke)
    if parameters != ["self", "event"] or f"self.{HOOK_METHOD}(event=" not in invoke_source:
        raise LocalRuntimeError(f"moto's {HOOK_CLASS}.{HOOK_METHOD} changed (parameters "
                                f"{parameters}): the local Lambda hook must be revisited")
    return owner


def _routed_invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
    """Replaces moto's LambdaFunction._invoke_lambda (see install)."""
    runtime = _ACTIVE
    if runtime is None:
        return error_outcome("Runtime.Unavailable", "no local Lambda runtime is running "
                             "(fsd_inference.local.lambda_runtime)", "").as_tuple()
    return runtime.invoke(self, event).as_tuple()


def install(runtime: LambdaRuntime) -> None:
    """Route every moto Lambda invocation in this process to ``runtime``."""
    global _ACTIVE, _ORIGINAL
    with _INSTALL_LOCK:
        owner = hook_target()
        if _ACTIVE is not None and _ACTIVE is not runtime:
            raise LocalRuntimeError("another local Lambda runtime is already installed")
        if _ORIGINAL is None:
            _ORIGINAL = getattr(owner, HOOK_METHOD)
            setattr(owner, HOOK_METHOD, _routed_invoke_lambda)
        _ACTIVE = runtime


def uninstall(runtime: LambdaRuntime) -> None:
    """Restore moto's own method (if ``runtime`` is the one installed)."""
    global _ACTIVE, _ORIGINAL
    with _INSTALL_LOCK:
        if _ACTIVE is not runtime:
            return
        _ACTIVE = None
        if _ORIGINAL is not None:
            setattr(hook_target(), HOOK_METHOD, _ORIGINAL)
            _ORIGINAL = None


@contextmanager
def lambda_runtime(endpoint_url: str, root: Path | None = None) -> Iterator[LambdaRuntime]:
    """A runtime installed into moto for the block; every sandbox is stopped after it."""
    runtime = LambdaRuntime(endpoint_url, root)
    install(runtime)
    try:
        yield runtime
    finally:
        uninstall(runtime)
        runtime.close()
