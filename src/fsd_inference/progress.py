"""Progress lines on stderr for long work: a live line on a terminal, sparse lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report ``done / total`` steps of a named task.

    On a terminal the line is redrawn in place; in logs (CI, files) one line is written
    per tenth of the work, so long runs show life without flooding the output.
    """

    def __init__(self, label: str, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        elapsed = time.perf_counter() - self.start
        line = f"{self.label}: {done}/{total} ({elapsed:.1f} s)"
        if self.live:
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{line}{end}")
            self.stream.flush()
            return
        decile = done * 10 // total
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()
