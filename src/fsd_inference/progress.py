"""Progress on stderr for long work, with percentage and ETA from tqdm.

On a terminal tqdm redraws one bar in place. Anywhere else (CI logs, files, a pipe)
a redrawn line would be hundreds of carriage returns, so :class:`Meter` writes one
plain line per tenth of the work instead, formatted by tqdm's own ``format_meter``
(the same percentage, counts, elapsed time and ETA as the bar).
"""

from __future__ import annotations

import sys
import time
from typing import NoReturn, Protocol

from tqdm import tqdm

# The bar and the log lines show the same fields; the log line has no bar characters.
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
              "[{elapsed}<{remaining}]{postfix}")
LOG_STEPS = 10  # lines per task when not on a terminal


class TextSink(Protocol):
    """Where progress goes: sys.stderr, or any writer (the driver's ``say``)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def is_terminal(stream: TextSink) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class Meter:
    """``done / total`` units of one task: a tqdm bar on a terminal, sparse lines elsewhere.

    ``update`` may be called as often as convenient; the total may grow (a plan that
    turns out to have more blocks) and the description change (the current phase).
    """

    def __init__(self, label: str, total: int, stream: TextSink | None = None,
                 live: bool | None = None, unit: str = "it",
                 started: float | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.live = is_terminal(self.stream) if live is None else live
        self.unit = unit
        self.done = 0
        self.postfix = ""
        self.start = time.perf_counter() if started is None else started
        self._logged_step = -1
        self._bar: tqdm[NoReturn] | None = None
        if self.live:
            self._bar = tqdm(total=total, desc=label, file=self.stream, unit=unit,
                             bar_format=BAR_FORMAT, dynamic_ncols=True, leave=True)
            # tqdm times from its creation; the task may have started before (loading)
            self._bar.start_t -= time.perf_counter() - self.start

    def update(self, done: int, total: int | None = None, label: str | None = None,
               postfix: str = "") -> None:
        changed_label = label is not None and label != self.label
        self.done = done
        self.total = total if total is not None else self.total
        self.label = label if label is not None else self.label
        self.postfix = postfix
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.set_description_str(self.label, refresh=False)
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.n = done
            self._bar.refresh()
            return
        step = done * LOG_STEPS // max(self.total, 1)
        if step != self._logged_step or changed_label:
            self._logged_step = step
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """The current state as one line (what a log gets)."""
        postfix = f" {self.postfix}" if self.postfix else ""
        return tqdm.format_meter(self.done, self.total, time.perf_counter() - self.start,
                                 prefix=self.label, unit=self.unit,
                                 bar_format=LINE_FORMAT.replace("{postfix}", postfix))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Progress:
    """A ``progress(done, total)`` callback (the library's hook) drawing a :class:`Meter`."""

    def __init__(self, label: str, stream: TextSink | None = None, quiet: bool = False,
                 unit: str = "layer") -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.unit = unit
        self.started = time.perf_counter()
        self._meter: Meter | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        if self._meter is None:
            self._meter = Meter(self.label, total, self.stream, unit=self.unit,
                                started=self.started)
        self._meter.update(done, total)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None
