"""Progress and phase times folded from a Step Functions history (synthetic events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fsd_inference.cloud.timeline import read_timeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(seconds: float, kind: str, name: str | None = None, **details: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"type": kind, "timestamp": T0 + timedelta(seconds=seconds)}
    if name is not None:
        key = "stateEnteredEventDetails" if kind.endswith("Entered") else \
            "stateExitedEventDetails"
        found[key] = {"name": name, **details}
    return found


def history(workers: int = 2) -> list[dict[str, Any]]:
    plan_output = json.dumps({"run": {"workers": workers, "blocks": 2}})
    events = [event(0, "ExecutionStarted"), event(0, "TaskStateEntered", "Plan"),
              event(3, "TaskStateExited", "Plan", output=plan_output)]
    # block 0: one attempt; block 1: a failed attempt, then a retry that succeeds
    events += [event(3, "MapStateEntered", "InlineBlock"), event(3, "MapStateStarted"),
               *[event(5, "MapIterationSucceeded") for _ in range(workers)],
               event(5, "MapStateSucceeded"), event(5, "MapStateExited", "InlineBlock")]
    events += [event(5, "MapStateEntered", "InlineBlock"), event(5, "MapStateStarted"),
               event(6, "MapIterationFailed"), event(6, "MapStateFailed"),
               event(9, "MapStateStarted"), event(10, "MapIterationSucceeded")]
    return events


def test_a_running_block_shows_its_workers_and_attempt() -> None:
    timeline = read_timeline(history())
    assert timeline.status == "RUNNING" and (timeline.workers, timeline.blocks_total) == (2, 2)
    line = timeline.describe(T0 + timedelta(seconds=10.5))
    assert line == "block 2/2: 1/2 workers done, attempt 2 | 10.5 s"


def test_phases_come_from_the_states_entered_and_exited() -> None:
    events = [
        *history(), event(11, "MapIterationSucceeded"), event(11, "MapStateSucceeded"),
        event(11, "MapStateExited", "InlineBlock"), event(11, "TaskStateEntered", "Gather"),
        event(12, "TaskStateExited", "Gather"), event(12, "TaskStateEntered", "Cleanup"),
        event(12.5, "TaskStateExited", "Cleanup"), event(12.5, "ExecutionSucceeded")]
    timeline = read_timeline(events)
    assert timeline.status == "SUCCEEDED"
    phases = timeline.phases()
    assert phases["plan_s"] == 3 and phases["blocks_s"] == [2, 6]
    assert phases["block_attempts"] == [1, 2]
    assert phases["gather_s"] == 1 and phases["cleanup_s"] == 0.5 and phases["total_s"] == 12.5
    assert timeline.blocks[1].failed_attempts == 1
    assert timeline.describe(T0) == "succeeded after 12.5 s"


def test_planning_and_cleanup_after_a_failure_are_described() -> None:
    started = [event(0, "ExecutionStarted"), event(0, "TaskStateEntered", "Plan")]
    assert read_timeline(started).describe(T0 + timedelta(seconds=2)).startswith("planning")
    failed = [*started, event(1, "TaskStateEntered", "CleanupAfterFailure")]
    assert "cleaning up after a failure" in read_timeline(failed).describe(T0)


# ----------------------------------------------------------------------------- paging


def test_local_history_pages_as_aws_pages_them() -> None:
    """local.history_pages: maxResults bounds a page, nextToken continues it, reverseOrder
    gives the newest first; without maxResults the whole history (moto's behaviour)."""
    from fsd_inference.local.history_pages import InvalidToken, page

    events = [{"id": i} for i in range(1, 8)]
    assert page(events, None, False, None) == (events, None)
    first, token = page(events, 3, True, None)
    assert [e["id"] for e in first] == [7, 6, 5] and token
    second, token = page(events, 3, True, token)
    third, last = page(events, 3, True, token)
    assert [e["id"] for e in second + third] == [4, 3, 2, 1] and last is None
    forward, token = page(events, 5, False, None)
    rest, none = page(events, 5, False, token)
    assert forward + rest == events and none is None
    assert page(events, 5000, False, None) == (events, None)  # at most 1,000 a page
    with pytest.raises(InvalidToken):
        page(events, 3, False, "not-a-token")


def test_local_history_pages_stay_put_while_the_history_grows() -> None:
    """A token names the next event, so events appended between two pages of a
    newest-first read neither repeat nor hide the older ones (AWS's tokens behave so)."""
    from fsd_inference.local.history_pages import page

    events = [{"id": i} for i in range(1, 8)]
    first, token = page(events, 3, True, None)
    events += [{"id": 8}, {"id": 9}]
    second, token = page(events, 3, True, token)
    third, last = page(events, 3, True, token)
    assert [e["id"] for e in first + second + third] == [7, 6, 5, 4, 3, 2, 1]
    assert last is None
