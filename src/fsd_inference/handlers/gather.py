"""Gather: ``{"run": <plan's run>}`` after the last block."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from fsd_inference.cloud.events import GatherEvent
from fsd_inference.cloud.gather_step import gather_step
from fsd_inference.cloud.schema import load
from fsd_inference.handlers._common import LambdaContext
from fsd_inference.handlers.observability import add_metadata, add_metrics, observed


@observed("gather")
def handler(event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
    run = load(GatherEvent, event, "the gather event").run
    result = gather_step(run)
    totals = result["totals"]
    # The run's totals: one data point per execution, so CloudWatch sums are per period.
    add_metadata(channel=run.channel, workers=run.workers)
    add_metrics(MetricUnit.Count, Runs=1, Categories=result["categories"],
                MessagesSent=totals["messages_sent"], ApiCalls=totals["api_calls"])
    add_metrics(MetricUnit.Bytes, BytesSent=totals["bytes_sent"])
    add_metrics(MetricUnit.Seconds, ComputeSeconds=totals["compute_s"],
                WaitSeconds=totals["wait_s"])
    add_metrics(MetricUnit.NoUnit, CostUSD=result["cost_usd"])
    return result
