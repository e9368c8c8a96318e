"""The Cleanup states: tear down the channel, delete the execution's scratch. Idempotent.

Runs on success (after Gather) and on every failure (a Catch routes there with the
error in ``state.error``). It may run before the Plan returned anything (the Plan
itself failed) and while workers of a failed block are still running, so it finds the
run from the state if it is there, else from the manifest in S3, else does what it can
with the execution id alone. Results under ``results/`` are kept. Everything that can
be cleaned is cleaned before any failure is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.channels import NO_EXCHANGE, ChannelConfig, Transport
from fsd_inference.channels import transport_class as default_transport_class
from fsd_inference.cloud.layout import RunLayout, run_id
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.exceptions import FsdError
from fsd_inference.storage import Storage, storage_for

CAUSE_LIMIT = 32_000  # a Fail state's Cause holds at most 32,768 characters

TransportFactory = Callable[[str, int, ChannelConfig], Transport]


class CleanupError(FsdError):
    """Some of the execution's resources could not be deleted; names them."""


def _run_from(state: dict[str, Any] | None, storage: Storage, layout: RunLayout
              ) -> RunInfo | None:
    if state and isinstance(state.get("run"), dict):
        try:
            return RunInfo.from_dict(state["run"])
        except FsdError:
            pass
    if storage.exists(layout.manifest):
        manifest = storage.get_json(layout.manifest)
        return RunInfo.from_dict(manifest["run"])
    return None


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
                              "ConfigError", "ModelError", "InputFormatError"})


def cleanup_step(execution_name: str, state: dict[str, Any] | None,
                 settings: CloudSettings | None = None, storage: Storage | None = None,
                 transport_factory: TransportFactory | None = None) -> dict[str, Any]:
    settings = settings or CloudSettings()
    execution = run_id(execution_name)
    layout = RunLayout(execution)
    storage = storage or storage_for(settings.bucket, settings.aws)
    problems: list[str] = []
    run: RunInfo | None = None
    try:
        run = _run_from(state, storage, layout)
    except FsdError as exc:
        problems.append(f"reading the run: {exc}")
    transport = "no run found: nothing to tear down"
    if run is not None:
        try:
            factory = (default_transport_class(run.channel) if run.channel == NO_EXCHANGE
                       else transport_factory or default_transport_class(run.channel))
            factory(run.execution, run.workers, run.channel_config(settings.aws)).teardown()
            transport = f"{run.channel} channel torn down ({run.workers} workers)"
        except (FsdError, ClientError, BotoCoreError) as exc:
            problems.append(f"tearing down the {run.channel} channel: {exc}")
            transport = "teardown failed"
    deleted = 0
    try:
        deleted = storage.delete_prefix(layout.prefix)
    except FsdError as exc:
        problems.append(str(exc))
    if problems:
        raise CleanupError(f"execution {execution}: " + "; ".join(problems))
    error = state.get("error") if state else None
    return {
        "execution": execution,
        "deleted_objects": deleted,
        "transport": transport,
        "failed": error is not None,
        "cause": readable_cause(execution, error) if error is not None else None,
    }
