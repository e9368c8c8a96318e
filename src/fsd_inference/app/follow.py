"""Follow one execution to its end without ever hanging, on AWS or any emulator.

:func:`follow` polls DescribeExecution (the status) and GetExecutionHistory (where the
execution is: the progress line, the phases) until the status is final, and stops
waiting with a clear error when the endpoint is not a working Step Functions:

- its history says the execution ended while DescribeExecution still says RUNNING
  (``moto_server`` without ``execute_state_machine`` answers every history with a canned
  one that "succeeds" after 20 s and keeps the execution RUNNING forever): after
  ``CONSISTENCY_GRACE_S``, :class:`NotExecuting`;
- nothing moves for ``stall_s`` seconds: no new history event and no Map Run item
  finished. A block attempt is silent while its workers run (the parent's history has
  no events then, and a Map Run's counters change only when a worker ends), and
  may last a worker's Lambda timeout (900 s) plus a retry interval (150 s), so the
  default is 20 minutes. :class:`Stalled`.

The history is read incrementally (cloud.timeline.HistoryReader: only the events that
are new since the last poll). For a Distributed Map block the progress comes from
DescribeMapRun (items succeeded), since child executions keep their events out of the
parent's history. Both errors say
how to stop the execution (:func:`stop_command`): it may well still be running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.app.progress import ProgressLine
from fsd_inference.cloud.timeline import HistoryReader, Timeline, read_timeline
from fsd_inference.constants import STALL_TIMEOUT_S
from fsd_inference.exceptions import FsdError

POLL_S = 1.0
STALL_S = STALL_TIMEOUT_S
CONSISTENCY_GRACE_S = 10.0  # DescribeExecution may lag the history briefly
DISTRIBUTED_MAP_STATE = "DistributedBlock"
Say = Callable[[str], None]


def stop_command(execution_arn: str) -> str:
    return f"aws stepfunctions stop-execution --execution-arn {execution_arn}"


class FollowError(FsdError):
    """Stopped waiting for an execution that may still run; says how to stop it."""

    def __init__(self, execution_arn: str, message: str) -> None:
        self.execution_arn = execution_arn
        super().__init__(f"{message}; if it still runs, stop it with: "
                         f"{stop_command(execution_arn)}")


class NotExecuting(FollowError):
    """The endpoint's Step Functions does not run executions (a canned history)."""


class Stalled(FollowError):
    """No progress for the stall time."""


def map_run_progress(sfn: Any, execution_arn: str, timeline: Timeline) -> tuple[int, int]:
    """(succeeded, failed) items of the running Distributed Map block, also written into
    the timeline's block; (0, 0) when not in one or not allowed to ask."""
    if timeline.current != DISTRIBUTED_MAP_STATE or not timeline.blocks or \
            timeline.blocks[-1].end is not None:
        return 0, 0
    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if not runs:
            return 0, 0
        latest = max(runs, key=lambda run: run["startDate"])
        counts = sfn.describe_map_run(mapRunArn=latest["mapRunArn"])["itemCounts"]
    except (ClientError, BotoCoreError, KeyError):
        return 0, 0
    block = timeline.blocks[-1]
    block.workers_done, block.workers_failed = counts["succeeded"], counts["failed"]
    return block.workers_done, block.workers_failed


@dataclass
class _Watch:
    """What moved last, and when."""

    stall_s: float
    signature: tuple[int, int, int] = (-1, -1, -1)
    moved_at: float = 0.0
    inconsistent_since: float | None = None

    def moved(self, signature: tuple[int, int, int], now: float) -> None:
        if signature != self.signature:
            self.signature, self.moved_at = signature, now

    def stalled(self, now: float) -> bool:
        return now - self.moved_at > self.stall_s


def follow(sfn: Any, execution_arn: str, poll_s: float, progress: ProgressLine,
           stall_s: float = STALL_S) -> tuple[dict[str, Any], Timeline]:
    """Poll until the execution ends; (DescribeExecution, the timeline of its history).
    Raises NotExecuting or Stalled (see the module doc) instead of waiting forever."""
    watch = _Watch(stall_s, moved_at=time.monotonic())
    history = HistoryReader(sfn, execution_arn)
    try:
        while True:
            description = sfn.describe_execution(executionArn=execution_arn)
            timeline = read_timeline(history.read())
            items = map_run_progress(sfn, execution_arn, timeline)
            progress(timeline, datetime.now(UTC))
            if description["status"] != "RUNNING":
                return description, timeline
            now = time.monotonic()
            watch.moved((timeline.events, *items), now)
            if timeline.status != "RUNNING":  # the history ended, the execution did not
                watch.inconsistent_since = watch.inconsistent_since or now
                if now - watch.inconsistent_since > CONSISTENCY_GRACE_S:
                    raise NotExecuting(execution_arn, _canned(description, timeline))
            if watch.stalled(now):
                raise Stalled(execution_arn, f"execution {description.get('name', '')} made "
                              f"no progress for {stall_s:g} s ({_where(timeline)}): "
                              f"stopped waiting (--stall-timeout sets how long)")
            time.sleep(poll_s)
    finally:
        progress.close()


def _canned(description: dict[str, Any], timeline: Timeline) -> str:
    return (f"the endpoint does not run Step Functions executions: the history of "
            f"{description.get('name', 'the execution')} says it {timeline.status.lower()}, "
            f"but DescribeExecution still says RUNNING after {CONSISTENCY_GRACE_S:g} s "
            f"(a moto server without execute_state_machine? `fsd emulator` runs them)")


def _where(timeline: Timeline) -> str:
    if not timeline.events:
        return "no history at all"
    return f"{timeline.events} history events, last in {timeline.current or 'the start'}"


# ----------------------------------------------------------------------------- failures


def failed_items(sfn: Any, execution_arn: str, limit: int = 5) -> list[str]:
    """What the failed child executions of the latest Map Run said (a Distributed Map
    fails with States.ExceedToleratedFailureThreshold; the worker's error is there)."""
    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if not runs:
            return []
        latest = max(runs, key=lambda run: run["startDate"])
        failed = sfn.list_executions(mapRunArn=latest["mapRunArn"],
                                     statusFilter="FAILED").get("executions", [])
        lines = []
        for child in failed[:limit]:
            detail = sfn.describe_execution(executionArn=child["executionArn"])
            lines.append(_item_failure(detail))
    except (ClientError, BotoCoreError, KeyError):
        return []
    return lines


def _item_failure(detail: dict[str, Any]) -> str:
    import json

    try:
        item = json.loads(detail.get("input") or "{}")
    except ValueError:
        item = {}
    who = (f"worker {item['worker']}" if isinstance(item, dict) and "worker" in item
           else f"item {detail.get('name', '?')}")
    message = detail.get("cause") or ""
    try:
        payload = json.loads(message) if message.startswith("{") else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "errorMessage" in payload:
        message = str(payload["errorMessage"])
    return f"{who}: {detail.get('error') or 'error'}: {message}".rstrip(": ")
