"""``fsd run``'s progress line, drawn from the execution's Step Functions history.

The unit of work is one Map iteration: one worker running one block of layers, so an
execution has ``blocks x workers`` of them, known once the Plan state returns. The
percentage and the ETA (tqdm's, from the rate of finished iterations since the first
block started) count those; the phase (planning, block k of B with how many of its P
workers are done, gathering, cleaning up) is the label. Before the Plan returns there
is no total yet, so the line shows the phase and the elapsed time alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime

from fsd_inference.cloud.timeline import Timeline
from fsd_inference.progress import Meter

Say = Callable[[str], None]
_TASK_LABELS = {"Plan": "planning", "Gather": "gathering", "Cleanup": "cleaning up",
                "CleanupAfterFailure": "cleaning up after a failure"}


class _SayStream(io.TextIOBase):
    """A text stream over ``say`` (the driver's stderr writer), for tqdm."""

    def __init__(self, say: Say, live: bool) -> None:
        self._say = say
        self._live = live

    def write(self, text: str) -> int:
        self._say(text)
        return len(text)

    def isatty(self) -> bool:
        return self._live


def iterations_done(timeline: Timeline, blocks: int | None = None) -> int:
    """Map iterations (worker x block) finished in the first ``blocks`` blocks (all by
    default): the successful iterations of each block's latest attempt (a retried block
    starts again from none)."""
    workers = timeline.workers or 0
    return sum(min(block.workers_done, workers) for block in timeline.blocks[:blocks])


def phase_label(timeline: Timeline) -> tuple[str, str]:
    """(label, detail) of where the execution is, e.g. ("block 2/6", "3/8 workers done")."""
    if timeline.status != "RUNNING":
        return timeline.status.lower(), ""
    if timeline.blocks and timeline.current not in _TASK_LABELS:
        block = timeline.blocks[-1]
        retry = f", attempt {block.attempts}" if block.attempts > 1 else ""
        return (f"block {block.index + 1}/{timeline.blocks_total or '?'}",
                f"{block.workers_done}/{timeline.workers or '?'} workers done{retry}")
    return _TASK_LABELS.get(timeline.current, "starting"), ""


class ProgressLine:
    """Draws the execution's progress on ``say``: a tqdm bar when ``live`` (a terminal),
    else one line per phase change and per tenth of the iterations."""

    def __init__(self, say: Say | None, live: bool) -> None:
        self.say = say
        self.live = live
        self._meter: Meter | None = None
        self._last_phase = ""
        self._blocks_shown = 0

    def __call__(self, timeline: Timeline, now: datetime) -> None:
        if self.say is None:
            return
        label, detail = phase_label(timeline)
        if timeline.workers is None or timeline.blocks_total is None:
            self._before_plan(f"{label} | {timeline.seconds(now):.1f} s")
            return
        total = timeline.workers * timeline.blocks_total
        if self._meter is None:
            if self.live and self._last_phase:
                self.say("\n")
            self._meter = Meter(label, total, _SayStream(self.say, self.live), self.live,
                                unit="task")
        # Each block's end, with its workers all counted: between two polls a block's
        # workers usually all finish (they wait on each other), so a log that showed only
        # the next block's start would never show a worker done.
        finished = [block for block in timeline.blocks if block.end]
        for block in finished[self._blocks_shown:]:
            upto = iterations_done(timeline, block.index + 1)
            self._meter.update(upto, total, f"block {block.index + 1}/"
                               f"{timeline.blocks_total} done",
                               f"{block.workers_done}/{timeline.workers} workers done")
        self._blocks_shown = len(finished)
        self._meter.update(iterations_done(timeline), total, label, detail)

    def _before_plan(self, line: str) -> None:
        assert self.say is not None
        if self.live:
            self.say(f"\r{line}\033[K")
        elif line.split(" | ")[0] != self._last_phase:
            self.say(line + "\n")
        self._last_phase = line.split(" | ")[0]

    def close(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None
        elif self.say is not None and self.live and self._last_phase:
            self.say("\n")
