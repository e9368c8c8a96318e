"""An execution's progress and phase times, read from its Step Functions history.

The history is the one record of a run that exists on AWS and locally alike: which
state ran when, how many Map iterations (workers) of the current block are done, how
often a block was retried. :func:`read_timeline` folds the events (oldest first) into
a :class:`Timeline`; the driver polls it for the progress line and reports its spans
as the time per phase (Plan, each block, Gather, Cleanup).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fsd_inference.cloud.history import MAP_STATES

PLAN_STATE = "Plan"
GATHER_STATE = "Gather"
CLEANUP_STATE = "Cleanup"
FAILURE_CLEANUP_STATE = "CleanupAfterFailure"
_TASKS = (PLAN_STATE, GATHER_STATE, CLEANUP_STATE, FAILURE_CLEANUP_STATE)
_MAPS = frozenset(MAP_STATES.values())
PAGE_MAX = 1000  # GetExecutionHistory's largest page
_ENDS = {"ExecutionSucceeded": "SUCCEEDED", "ExecutionFailed": "FAILED",
         "ExecutionAborted": "ABORTED", "ExecutionTimedOut": "TIMED_OUT"}


@dataclass
class Span:
    """One visit of a state: entered, exited (None while it runs)."""

    name: str
    start: datetime
    end: datetime | None = None

    def seconds(self, now: datetime | None = None) -> float:
        end = self.end or now
        return (end - self.start).total_seconds() if end else 0.0


@dataclass
class BlockSpan(Span):
    """One Map state visit: a block of layers run by all P workers (retries included)."""

    index: int = 0
    attempts: int = 0
    workers_done: int = 0  # iterations that succeeded in the latest attempt
    workers_failed: int = 0
    failed_attempts: int = 0


@dataclass
class Timeline:
    status: str = "RUNNING"
    start: datetime | None = None
    end: datetime | None = None
    workers: int | None = None
    blocks_total: int | None = None
    current: str = ""
    failed_in: str = ""  # the state that was running when the failure path began
    tasks: dict[str, Span] = field(default_factory=dict)
    blocks: list[BlockSpan] = field(default_factory=list)
    events: int = 0

    def seconds(self, now: datetime | None = None) -> float:
        end = self.end or now
        return (end - self.start).total_seconds() if self.start and end else 0.0

    def phases(self) -> dict[str, Any]:
        """Seconds per phase, from the states' entered/exited times."""
        phases: dict[str, Any] = {f"{name.lower()}_s": span.seconds()
                                  for name, span in self.tasks.items() if span.end}
        phases["blocks_s"] = [block.seconds() for block in self.blocks if block.end]
        phases["block_attempts"] = [block.attempts for block in self.blocks]
        phases["total_s"] = self.seconds()
        return phases

    def describe(self, now: datetime) -> str:
        """One progress line: where the execution is and for how long it has run."""
        elapsed = f"{self.seconds(now):.1f} s"
        if self.status != "RUNNING":
            return f"{self.status.lower()} after {elapsed}"
        if self.current in _MAPS and self.blocks:
            block = self.blocks[-1]
            total = self.blocks_total or "?"
            retry = f", attempt {block.attempts}" if block.attempts > 1 else ""
            return (f"block {block.index + 1}/{total}: {block.workers_done}/"
                    f"{self.workers or '?'} workers done{retry} | {elapsed}")
        doing = {PLAN_STATE: "planning (partition, shards, channel)",
                 GATHER_STATE: "gathering the categories and metrics",
                 CLEANUP_STATE: "cleaning up", FAILURE_CLEANUP_STATE: "cleaning up after "
                 "a failure"}.get(self.current, "starting")
        done = sum(1 for b in self.blocks if b.end)
        blocks = f", {done}/{self.blocks_total} blocks done" if self.blocks_total else ""
        return f"{doing}{blocks} | {elapsed}"


def _details(event: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = event.get(kind) or {}
    return found


def _read_run(output: str | None, timeline: Timeline) -> None:
    try:
        run = json.loads(output or "{}").get("run", {})
    except (ValueError, AttributeError):
        return
    if isinstance(run, dict):
        timeline.workers = run.get("workers", timeline.workers)
        timeline.blocks_total = run.get("blocks", timeline.blocks_total)


def read_timeline(events: Iterable[dict[str, Any]]) -> Timeline:
    """Fold history events, oldest first (GetExecutionHistory's default order)."""
    timeline = Timeline()
    for event in events:
        timeline.events += 1
        kind = event["type"]
        when = event["timestamp"]
        if kind == "ExecutionStarted":
            timeline.start = when
        elif kind in _ENDS:
            timeline.status, timeline.end = _ENDS[kind], when
        elif kind.endswith("StateEntered"):
            name = _details(event, "stateEnteredEventDetails").get("name", "")
            if name in _TASKS:
                if name == FAILURE_CLEANUP_STATE:
                    timeline.failed_in = timeline.current
                timeline.tasks[name] = Span(name, when)
                timeline.current = name
            elif name in _MAPS:
                timeline.blocks.append(BlockSpan(name, when, index=len(timeline.blocks)))
                timeline.current = name
        elif kind.endswith("StateExited"):
            details = _details(event, "stateExitedEventDetails")
            name = details.get("name", "")
            if name in _TASKS and name in timeline.tasks:
                timeline.tasks[name].end = when
                if name == PLAN_STATE:
                    _read_run(details.get("output"), timeline)
            elif name in _MAPS and timeline.blocks:
                timeline.blocks[-1].end = when
        elif timeline.blocks and timeline.blocks[-1].end is None:
            block = timeline.blocks[-1]
            if kind == "MapStateStarted":
                block.attempts += 1
                block.workers_done = block.workers_failed = 0
            elif kind == "MapIterationSucceeded":
                block.workers_done += 1
            elif kind == "MapIterationFailed":
                block.workers_failed += 1
            elif kind == "MapStateFailed":
                block.failed_attempts += 1
    return timeline


class HistoryReader:
    """One execution's events, oldest first, read incrementally by a follower.

    The first :meth:`read` takes the history in pages of 1,000; every later one asks
    for the newest events first (``reverseOrder``, pages of ``page_size``) and stops at
    the first event it already has (event ids rise by one per event), so a poll costs
    one small call however long the history has grown:
    re-reading the whole history every second had been most of the embedded server's
    work in the demo besides SQS. An endpoint that ignores ``reverseOrder`` (a bare
    moto server) answers oldest first; then every read is a full one, as before.
    """

    def __init__(self, client: Any, execution_arn: str, page_size: int = 25) -> None:
        self.client = client
        self.execution_arn = execution_arn
        self.page_size = page_size
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        last = int(self.events[-1]["id"]) if self.events else 0
        new: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": self.execution_arn, "reverseOrder": True,
                                      "maxResults": self.page_size if last else PAGE_MAX}
            if token:
                kwargs["nextToken"] = token
            page = self.client.get_execution_history(**kwargs)
            events = page.get("events", [])
            if len(events) > 1 and int(events[0]["id"]) < int(events[-1]["id"]):
                self.events = execution_history(self.client, self.execution_arn)
                return self.events  # oldest first: reverseOrder is not supported
            # ids already held (or taken from an earlier page of this read) are skipped:
            # the history grows while it is paged newest first
            oldest = int(new[-1]["id"]) if new else None
            fresh = [e for e in events
                     if int(e["id"]) > last and (oldest is None or int(e["id"]) < oldest)]
            new.extend(fresh)
            token = page.get("nextToken")
            if not token or any(int(e["id"]) <= last for e in events):
                break
        self.events.extend(reversed(new))
        return self.events


def execution_history(client: Any, execution_arn: str) -> list[dict[str, Any]]:
    """Every event of an execution, oldest first (all pages)."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": PAGE_MAX}
        if token:
            kwargs["nextToken"] = token
        page = client.get_execution_history(**kwargs)
        events.extend(page.get("events", []))
        token = page.get("nextToken")
        if not token:
            return events
