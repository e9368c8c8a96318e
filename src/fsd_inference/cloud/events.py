"""The events of the four functions (what statemachine/inference.asl.json passes them).

Declared with the rest of the schema (cloud.schema) and loaded by the handlers with
:func:`cloud.schema.load`, so a directly invoked function with an empty execution name,
a block out of range or an execution id such as ``../x`` fails with one SchemaError
naming the field, before anything is read or written.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from fsd_inference.channels import AWS_TRANSPORTS, NO_EXCHANGE
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.schema import MAX_WORKERS, ExecutionName, Index

# What connects Lambda functions (the memory channel only connects local processes).
LAMBDA_CHANNELS = sorted(AWS_TRANSPORTS | {NO_EXCHANGE})


def _lambda_channel(run: RunInfo) -> None:
    if run.channel not in LAMBDA_CHANNELS:
        raise ValueError(f"run.channel must be one of {LAMBDA_CHANNELS} in a Lambda "
                         f"function, not {run.channel!r}")


class PlanEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"execution": $$.Execution.Name, "request": $}``; the request has its own
    schema (plan_step.parse_request), whose errors are RequestError naming the field."""

    execution: ExecutionName
    request: Any


class WorkerEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One Map item: ``{"run", "block", "worker"}``."""

    run: RunInfo
    block: Index
    worker: Annotated[int, msgspec.Meta(ge=0, le=MAX_WORKERS - 1)]

    def __post_init__(self) -> None:
        _lambda_channel(self.run)
        if self.worker >= self.run.workers:
            raise ValueError(f"worker {self.worker} is outside 0..{self.run.workers - 1}")
        if self.block >= self.run.blocks:
            raise ValueError(f"block {self.block} is outside 0..{self.run.blocks - 1}")


class GatherEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    run: RunInfo

    def __post_init__(self) -> None:
        _lambda_channel(self.run)


class CleanupEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From the ASL: ``{"execution", "state"}`` (state: the whole state, read only for its
    ``error``). From the template's EventBridge rule on a stopped, timed-out or failed
    execution: ``{"execution", "status"}``. Nothing in either says what to delete: the
    cleanup reads that from the execution's own manifest."""

    execution: ExecutionName
    state: dict[str, Any] | None = None
    status: str | None = None

    @property
    def error(self) -> Any:
        """The Catch's ``{"Error", "Cause"}``, or a note for a status change event."""
        if self.state is not None and "error" in self.state:
            return self.state["error"]
        if self.status is not None:
            return {"Error": f"Execution{self.status.title().replace('_', '')}",
                    "Cause": f"the execution ended {self.status}"}
        return None
