"""The end of ``fsd run``: what ``--strategy auto`` would do with the same job.

The demo runs the neuron strategy because that is what it exists to show (every layer's
exchange, on the wire). Most jobs of its size need no exchange at all, so the run ends
with the planner's view of the same job, within the same deployment's limits (its
``WorkerMemory`` and ``MaxWorkers``, both channels ranked): the plan ``auto`` would choose
for cost and the one for latency, predicted on AWS with the service model, from a
sample of rows (cloud/auto_plan.py: the same call the Plan step makes for ``auto``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fsd_inference.cloud.auto_plan import plan_for_deployment
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.model.load import load_model
from fsd_inference.model.tsv import read_input
from fsd_inference.planner import Constraints, NoFeasiblePlan
from fsd_inference.planner.choose import describe, rank
from fsd_inference.planner.evaluate import Evaluated
from fsd_inference.predict.sampled import DEFAULT_SAMPLE_ROWS


def _plan(e: Evaluated) -> str:
    return f"{describe(e)}: p50 {e.p50:.1f} s, p95 {e.p95:.1f} s, ${e.cost_usd:.5f}"


def planner_view_lines(model: Path, input_path: Path, rows: int | None, dtype: str,
                       bias: float | None, run: dict[str, Any],
                       settings: CloudSettings | None = None) -> list[str]:
    """A few lines for the run's summary (see the module docstring)."""
    settings = settings or CloudSettings()
    started = time.perf_counter()
    network = load_model(model, bias=bias)
    inputs = read_input(input_path, neurons=network.neurons, dtype=dtype)
    if rows is not None:
        inputs = inputs[:rows]
    head = (f"planner (fsd run --strategy auto; on AWS within WorkerMemory "
            f"{settings.worker_memory_mb:,} MB and MaxWorkers {settings.max_workers})")
    try:
        result = plan_for_deployment(network, inputs, settings, workers=settings.max_workers,
                                     channel=None, constraints=Constraints("cost"),
                                     dtype=dtype)
    except NoFeasiblePlan as exc:
        return [f"{head}: no plan without a per-layer exchange fits: {exc.reason}"]
    fastest = rank(result.evaluated, Constraints("latency"))[0]
    cost = run.get("cost", {}).get("total_usd")
    ran = (f"; this run, {run.get('shape', {}).get('strategy', '?')} x{run.get('workers', '?')}"
           f", is modeled at ${cost:.5f} from the emulator's times" if cost else "")
    batch = int(inputs.shape[0])
    basis = (f"{DEFAULT_SAMPLE_ROWS:,} sampled rows" if batch > DEFAULT_SAMPLE_ROWS
             else "every row")
    latency = ("the same plan" if fastest.candidate == result.chosen.candidate
               and fastest.memory_mb == result.chosen.memory_mb
               else f"{_plan(fastest)} (ranking draws)")
    return [
        f"{head}: for cost, {_plan(result.chosen)}{ran}",
        f"  for latency, {latency}; {len(result.ranked)} plans ranked from {basis} in "
        f"{time.perf_counter() - started:.1f} s; predictions, not measurements",
    ]
