"""The summary ``fsd run`` prints: result, time per phase, traffic, API calls, cost."""

from __future__ import annotations

from typing import Any

from fsd_inference.analysis.summary import api_calls_line, cost_line
from fsd_inference.app.driver import RunReport


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " s"


def summary_lines(report: RunReport) -> list[str]:
    """What a person reads after the run (stdout)."""
    run = report.metrics or {}
    phases = report.timeline.phases()
    lines = [
        f"execution {report.execution_name} on stack {report.stack.stack_name}: "
        f"{report.status} in {phases['total_s']:.1f} s | {run.get('workers', '?')} workers, "
        f"{run.get('channel', '?')} channel, {run.get('blocks', '?')} block(s) of "
        f"{run.get('layers_per_block', '?')} layers, {run.get('neurons', '?')} neurons x "
        f"{run.get('depth', '?')} layers",
    ]
    if report.categories is not None:
        verdict = {True: "identical to the single-process reference",
                   False: f"DIFFERENT from the single-process reference "
                          f"({0 if report.reference is None else report.reference.size:,} "
                          f"categories)", None: "no reference"}[report.matches]
        batch = run.get("batch")
        inputs = f"{batch:,}" if isinstance(batch, int) else "?"
        lines.append(f"categories: {report.categories.size:,} of {inputs} inputs | {verdict}")
    lines += auto_lines(run)
    attempts = phases.get("block_attempts", [])
    retried = sum(a - 1 for a in attempts if a > 1)
    lines.append(
        "phases (execution history): "
        f"plan {phases.get('plan_s', 0):.1f} s | blocks {_seconds(phases['blocks_s'])}"
        + (f" ({retried} retried)" if retried else "")
        + f" | gather {phases.get('gather_s', 0):.1f} s | cleanup "
        f"{phases.get('cleanup_s', 0):.1f} s")
    steps = run.get("phases_s", {})
    plan = {k.removeprefix("plan_").removesuffix("_s"): v for k, v in steps.items()
            if k.startswith("plan_") and isinstance(v, float) and k != "plan_total_s"}
    if plan:
        lines.append("plan step: " + ", ".join(f"{k} {v:.1f} s" for k, v in plan.items())
                     + f"; slowest worker per block: {_seconds(steps.get('blocks_s', []))}")
    totals = run.get("summary", {}).get("totals", {})
    if totals:
        lines.append(
            f"traffic: {int(totals.get('bytes_sent', 0)):,} bytes in "
            f"{int(totals.get('messages_sent', 0)):,} messages "
            f"({int(totals.get('frames_sent', 0)):,} frames); summed over workers: "
            f"compute {totals.get('compute_s', 0):.1f} s, waiting {totals.get('wait_s', 0):.1f} s")
    calls = api_calls_line(run)
    if calls:
        lines.append(calls)
    lines.append(f"modeled AWS cost of this run: {cost_line(run)}")
    driver = report.seconds
    if driver:
        lines.append("driver: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s"
                                            for k, v in driver.items()))
    return lines


def auto_lines(run: dict[str, Any]) -> list[str]:
    """What ``auto`` chose in the Plan step, and the step's other notes."""
    lines = []
    auto = run.get("auto")
    if auto:
        predicted = auto.get("predicted")
        figures = (f"; predicted on AWS p50 {predicted['p50_s']:.1f} s, p95 "
                   f"{predicted['p95_s']:.1f} s, ${predicted['cost_usd']:.5f} (from "
                   f"{predicted['sampled_rows']:,} sampled rows)" if predicted else "")
        lines.append(f"auto chose {auto['chosen']}{figures}")
    lines += [f"note: {note}" for note in run.get("notes", [])
              if not note.startswith("auto chose")]
    return lines


def failure_lines(report: RunReport) -> list[str]:
    """Where a failed execution got to, before the error line."""
    timeline = report.timeline
    phases = timeline.phases()
    where = timeline.failed_in or timeline.current or "?"
    if where in ("InlineBlock", "DistributedBlock") and timeline.blocks:
        block = timeline.blocks[-1]
        where = f"block {block.index + 1} (attempt {block.attempts})"
    return [f"execution {report.execution_name} on stack {report.stack.stack_name}: "
            f"{report.status} after {phases['total_s']:.1f} s, in {where}; "
            f"{len(phases['blocks_s'])} block(s) had finished"]
