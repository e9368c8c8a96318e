"""The Cleanup states: tear down the channel, delete the execution's scratch. Idempotent.

Runs on success (after Gather), on every failure (a Catch routes there with the error
in ``state.error``), and from the template's EventBridge rule when an execution is
stopped, times out or fails outside a Catch (and from ``fsd cleanup``, the sweeper).

What it deletes comes ONLY from the execution's own manifest,
``runs/{run_id($$.Execution.Name)}/run.json``, written by the Plan before it created
anything: never from the state, which on a failed Plan is the raw execution input and
may name any run (a request carrying ``"run": {"execution": "<another run>"}`` must not
delete another execution's queues). The manifest must name this very execution;
without one there are no queues to delete (the Plan writes it before creating them).

Order, so that nothing can be lost track of: the channel (queues, spilled payloads),
then the scratch and run prefixes, and the manifest LAST, only when everything before
it is gone. Each step is retried with backoff; if one still fails, the error names
what is left and the manifest stays, so the next cleanup (a Retry, the EventBridge
rule, the sweeper) finds everything again. After the manifest, the prefixes are swept
once more for what a straggling worker wrote meanwhile (workers stop and withdraw their
writes once the manifest is gone). Results under ``results/`` are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.channels import NO_EXCHANGE, ChannelConfig, Transport
from fsd_inference.channels import transport_class as default_transport_class
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.layout import RunLayout, run_id
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.exceptions import FsdError
from fsd_inference.storage import Storage, storage_for

CAUSE_LIMIT = 32_000  # a Fail state's Cause holds at most 32,768 characters
ATTEMPTS = 4  # per cleanup step; waits of 0.5, 1, 2 s between them
BACKOFF_S = 0.5

TransportFactory = Callable[[str, int, ChannelConfig], Transport]
CLEANUP_FAILURES = (FsdError, ClientError, BotoCoreError)


class CleanupError(FsdError):
    """Some of the execution's resources could not be deleted; names them. The manifest
    is kept, so running the cleanup again finds them."""


class ForeignManifest(CleanupError):
    """The manifest under this execution's id belongs to another execution: nothing is
    deleted."""


def manifest_run(storage: Storage, layout: RunLayout, execution_name: str) -> RunInfo | None:
    """The run the execution's own manifest describes, or None if it has none.

    Raises ForeignManifest when the manifest names another execution or another run id
    (a tampered object or an id collision): then nothing may be torn down in its name.
    """
    if not storage.exists(layout.manifest):
        return None
    manifest = storage.get_json(layout.manifest)
    if not isinstance(manifest, dict):
        raise ForeignManifest(f"{layout.manifest} is not a manifest")
    owner = manifest.get("execution_name")
    run = RunInfo.from_dict(manifest.get("run"))
    if owner != execution_name or run.execution != layout.execution or \
            run.bucket != storage.bucket:
        raise ForeignManifest(f"{layout.manifest} belongs to execution {owner!r} (run "
                              f"{run.execution} in {run.bucket}), not to {execution_name!r}: "
                              f"nothing was deleted")
    return run


def retried(action: Callable[[], Any], attempts: int = ATTEMPTS,
            backoff_s: float = BACKOFF_S, sleep: Callable[[float], None] = time.sleep) -> Any:
    """``action()``, again after a failure (exponential backoff), at most ``attempts``
    times; the last failure propagates."""
    for attempt in range(attempts):
        try:
            return action()
        except CLEANUP_FAILURES:
            if attempt == attempts - 1:
                raise
            sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def readable_cause(execution: str, error: Any) -> str:
    """One paragraph a person can read, from a Catch's ``{"Error", "Cause"}``.

    A Lambda function's Cause is a JSON object (errorMessage, errorType, stackTrace);
    the message says what happened (every FsdError names its worker, layer, key...).
    """
    if not isinstance(error, dict):
        return f"execution {execution} failed (no error details)"
    name = str(error.get("Error") or "Error")
    cause = error.get("Cause")
    message = "" if cause is None else str(cause)
    try:
        parsed = json.loads(message) if message.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        message = str(parsed["errorMessage"])
        trace = parsed.get("stackTrace")
        if isinstance(trace, list) and trace and name not in _EXPECTED_ERRORS:
            message += f" [at {str(trace[-1]).strip()}]"
    text = f"{name}: {message}" if message else name
    return f"{text} (execution {execution}; its queues and scratch were cleaned up)"[
        :CAUSE_LIMIT]


_EXPECTED_ERRORS = frozenset({"RequestError", "RetryableBlockError", "BlockDeadlineError",
                              "RunCancelled", "StorageError", "ChannelTimeout", "ChannelError",
                              "ConfigError", "ModelError", "InputFormatError",
                              "SchemaError", "FrameError", "CleanupError"})


def cleanup_step(execution_name: str, error: Any = None,
                 settings: CloudSettings | None = None, storage: Storage | None = None,
                 transport_factory: TransportFactory | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Delete everything of ``execution_name`` but its results; ``error`` is the Catch's
    ``{"Error", "Cause"}`` (None on success). Raises CleanupError naming what is left."""
    settings = settings or CloudSettings()
    execution = run_id(execution_name)
    layout = RunLayout(execution)
    storage = storage or storage_for(settings.bucket, settings.aws)
    run = manifest_run(storage, layout, execution_name)
    problems: list[str] = []

    def step(what: str, action: Callable[[], Any]) -> Any:
        try:
            return retried(action, sleep=sleep)
        except CLEANUP_FAILURES as exc:
            problems.append(f"{what}: {exc}")
            return 0

    transport = "no manifest: the plan created no channel"
    if run is not None:
        factory = (default_transport_class(run.channel) if run.channel == NO_EXCHANGE
                   else transport_factory or default_transport_class(run.channel))
        channel = factory(run.execution, run.workers, run.channel_config(settings.aws))
        step(f"tearing down the {run.channel} channel", channel.teardown)
        transport = f"{run.channel} channel torn down ({run.workers} workers)"
    prefixes = (scratch_prefix(execution), layout.prefix)
    deleted = 0
    for prefix in prefixes:
        deleted += step(f"deleting {storage.uri(prefix)}",
                        partial(storage.delete_prefix, prefix, keep=layout.manifest))
    if problems:
        raise CleanupError(f"execution {execution}: " + "; ".join(problems) +
                           f" (the manifest {layout.manifest} is kept: run the cleanup again)")
    step(f"deleting the manifest {layout.manifest}", lambda: storage.delete(layout.manifest))
    for prefix in prefixes:  # what stragglers wrote before they saw the manifest go
        deleted += step(f"deleting {storage.uri(prefix)}",
                        partial(storage.delete_prefix, prefix))
    if problems:
        raise CleanupError(f"execution {execution}: " + "; ".join(problems))
    return {
        "execution": execution,
        "deleted_objects": deleted,
        "transport": transport,
        "failed": error is not None,
        "cause": readable_cause(execution, error) if error is not None else None,
    }
