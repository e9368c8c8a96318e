"""Progress lines: tqdm's bar on a terminal, sparse lines with percentage and ETA in logs,
and ``fsd run``'s count of finished worker tasks read from a (synthetic) history."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from typing import Any

from test_timeline import T0, event  # the synthetic history events of the timeline's tests

from fsd_inference.app.progress import ProgressLine, iterations_done, phase_label
from fsd_inference.cloud.timeline import read_timeline
from fsd_inference.progress import Meter, Progress

LOG_LINE = re.compile(r"^(?P<label>[^:]+): +(?P<pct>\d+)% (?P<n>\d+)/(?P<total>\d+) "
                      r"\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+)\](?P<rest>.*)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plan_events(workers: int, blocks: int) -> list[dict[str, Any]]:
    output = json.dumps({"run": {"workers": workers, "blocks": blocks}})
    return [event(0, "ExecutionStarted"), event(0, "TaskStateEntered", "Plan"),
            event(2, "TaskStateExited", "Plan", output=output)]


def block_events(start: float, done: int, workers: int, finished: bool) -> list[dict[str, Any]]:
    events = [event(start, "MapStateEntered", "InlineBlock"), event(start, "MapStateStarted"),
              *[event(start + 1, "MapIterationSucceeded") for _ in range(done)]]
    if finished:
        assert done == workers
        events += [event(start + 1, "MapStateSucceeded"),
                   event(start + 1, "MapStateExited", "InlineBlock")]
    return events


def test_log_lines_are_sparse_with_percentage_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress("reference", stream=stream)
    for k in range(1, 121):
        progress(k, 120)
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11, lines  # one per tenth of the work, not one per layer
    parsed = [LOG_LINE.match(line) for line in lines]
    assert all(parsed), lines
    percentages = [int(m["pct"]) for m in parsed if m]
    assert percentages == sorted(percentages) and percentages[-1] == 100
    for m in parsed:
        assert m and m["label"] == "reference" and m["total"] == "120"
        assert int(m["pct"]) == round(100 * int(m["n"]) / 120)
    assert "\r" not in stream.getvalue()


def test_a_terminal_gets_a_redrawn_bar() -> None:
    stream = Terminal()
    progress = Progress("layers", stream=stream)
    for k in range(1, 6):
        progress(k, 5)
    text = stream.getvalue()
    assert "\r" in text and "100%|" in text and "5/5" in text


def test_quiet_writes_nothing() -> None:
    stream = io.StringIO()
    Progress("layers", stream=stream, quiet=True)(3, 5)
    assert stream.getvalue() == ""


def test_a_meter_line_names_its_phase_and_detail() -> None:
    meter = Meter("block 2/3", 12, io.StringIO(), live=False, unit="task")
    meter.update(5, postfix="1/4 workers done")
    m = LOG_LINE.match(meter.line())
    assert m and (m["label"], m["n"], m["total"], m["pct"]) == ("block 2/3", "5", "12", "42")
    assert m["rest"] == " 1/4 workers done"


def test_workers_done_counts_finished_and_running_blocks() -> None:
    workers, blocks = 4, 3
    events = [*plan_events(workers, blocks), *block_events(2, 4, workers, True),
              *block_events(4, 3, workers, False)]
    timeline = read_timeline(events)
    assert iterations_done(timeline) == 4 + 3 and iterations_done(timeline, 1) == 4
    assert phase_label(timeline) == ("block 2/3", "3/4 workers done")
    # a failed attempt and its retry: the retry starts again from none
    retry = [*events, event(6, "MapIterationFailed"), event(6, "MapStateFailed"),
             event(9, "MapStateStarted"), event(10, "MapIterationSucceeded")]
    timeline = read_timeline(retry)
    assert iterations_done(timeline) == 4 + 1
    assert phase_label(timeline) == ("block 2/3", "1/4 workers done, attempt 2")


def test_the_run_progress_in_a_log() -> None:
    """Without a terminal: one line per phase change and per tenth, each with the right
    count of workers done in its block and the percentage of all worker tasks."""
    workers, blocks = 2, 2
    history = plan_events(workers, blocks)
    out: list[str] = []
    line = ProgressLine(out.append, live=False)
    snapshots = [
        [event(0, "ExecutionStarted"), event(0, "TaskStateEntered", "Plan")],
        history,
        [*history, *block_events(2, 1, workers, False)],
        [*history, *block_events(2, 2, workers, True)],
        [*history, *block_events(2, 2, workers, True), *block_events(4, 1, workers, False)],
        [*history, *block_events(2, 2, workers, True), *block_events(4, 2, workers, True),
         event(6, "TaskStateEntered", "Gather")],
    ]
    for events in snapshots:
        line(read_timeline(events), T0 + timedelta(seconds=7))
    line.close()
    text = "".join(out)
    lines = text.splitlines()
    assert lines[0] == "planning | 7.0 s"
    parsed = [LOG_LINE.match(x) for x in lines[1:]]
    assert all(parsed), lines
    seen = [(m["label"], int(m["n"]), int(m["pct"]), m["rest"].strip()) for m in parsed if m]
    assert ("block 1/2", 1, 25, "1/2 workers done") in seen
    assert ("block 1/2 done", 2, 50, "2/2 workers done") in seen
    assert ("block 2/2", 3, 75, "1/2 workers done") in seen
    assert seen[-2:] == [("block 2/2 done", 4, 100, "2/2 workers done"),
                         ("gathering", 4, 100, "")]
    assert "\r" not in text


def test_the_run_progress_on_a_terminal_is_a_bar() -> None:
    out: list[str] = []
    line = ProgressLine(out.append, live=True)
    events = [*plan_events(2, 2), *block_events(2, 1, 2, False)]
    line(read_timeline(events), T0 + timedelta(seconds=3))
    line.close()
    text = "".join(out)
    assert "block 1/2:  25%|" in text and "1/4" in text and "1/2 workers done" in text


def test_nothing_is_drawn_without_a_writer() -> None:
    line = ProgressLine(None, live=True)
    line(read_timeline(plan_events(2, 2)), T0)
    line.close()
