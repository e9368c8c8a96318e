"""``fsd run``: the serverless application end to end.

Without ``--stack``: the embedded local AWS (moto with executing Step Functions and the
project's handlers as Lambda functions), template.yaml deployed into it, one execution.
With ``--stack NAME``: the same driver against a stack deployed with ``sam deploy``.
See driver.py for the steps and report.py for what is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsd_inference.app.driver import (
    LOCAL_STACK,
    ExecutionFailed,
    RunOptions,
    RunReport,
    finish_run,
    run_local,
    run_on_stack,
    start_run,
)
from fsd_inference.app.interrupt import Ask, ask_on_terminal, interrupted
from fsd_inference.app.report import failure_lines, summary_lines
from fsd_inference.config import AwsConfig
from fsd_inference.model.tsv import write_categories
from fsd_inference.output import write_json

EXIT_MISMATCH = 3


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def run_and_report(options: RunOptions, out: Path, metrics: str | Path | None = None,
                   stack: str | None = None, aws: AwsConfig | None = None,
                   quiet: bool = False, plot: Path | None = None,
                   ask: Ask = ask_on_terminal,
                   epilogue: Callable[[dict[str, Any]], list[str]] | None = None) -> int:
    """Run, print the summary, write the categories (and the metrics: a file, or ``-``
    for stdout; and their plot); the exit code. ``epilogue``: more lines after the
    summary, from the run's metrics (fsd run's planner view, app/planner_view.py).

    Interrupted (Ctrl-C) while following an execution on a stack, it says how to stop
    that execution, or asks and stops it (app.interrupt), then lets the interrupt go on.
    """
    say = None if quiet else _stderr
    live = sys.stderr.isatty()
    try:
        if stack:
            started = start_run(stack, options, aws or AwsConfig(), say)
            try:
                report = finish_run(started, say, live)
            except KeyboardInterrupt:
                interrupted(started, _stderr, ask)
                raise
        else:
            report = run_local(options, say, live)
    except ExecutionFailed as exc:
        for line in failure_lines(exc.report):
            print(line)
        raise
    assert report.categories is not None
    write_categories(report.categories, out)
    for line in summary_lines(report):
        print(line)
    print(f"categories written to {out.resolve()}")
    if epilogue is not None and report.metrics is not None:
        for line in epilogue(report.metrics):
            print(line)
    if plot is not None:
        from fsd_inference.analysis.plot import plot_metrics

        print(f"plot written to {plot_metrics(report.metrics_document(), plot)}")
    write_json(report.metrics_document(), metrics)
    return EXIT_MISMATCH if report.matches is False else 0


__all__ = ["LOCAL_STACK", "ExecutionFailed", "RunOptions", "RunReport", "run_and_report",
           "run_local", "run_on_stack"]
