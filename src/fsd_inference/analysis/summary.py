"""What ``fsd report`` prints about a metrics document, and its JSON form.

Also the API-call and cost lines that ``fsd run``'s own summary shares (app/report.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fsd_inference.analysis.data import layer_times, traffic

TOP_CALLS = 8


def api_call_counts(metrics: dict[str, Any]) -> Counter[str]:
    """Calls by API, the workers' and the steps' outside them together."""
    calls: Counter[str] = Counter(metrics.get("summary", {}).get("api_calls", {}))
    calls.update(metrics.get("api_calls_outside_workers", {}))
    return calls


def api_calls_line(metrics: dict[str, Any]) -> str | None:
    calls = api_call_counts(metrics)
    if not calls:
        return None
    top = ", ".join(f"{api} {n:,}" for api, n in calls.most_common(TOP_CALLS))
    rest = len(calls) - TOP_CALLS
    return (f"API calls ({sum(calls.values()):,}): {top}"
            + (f", {rest} more kinds" if rest > 0 else ""))


def cost_line(metrics: dict[str, Any]) -> str:
    """The modelled cost, item by item (a cloud run's metrics carry it)."""
    cost = metrics.get("cost")
    if not cost:
        return "no cost estimate in the metrics"
    items = cost["items"]
    lam = items["lambda_compute"]["usd"] + items["lambda_requests"]["usd"]
    s3 = items["s3_put_list_requests"]["usd"] + items["s3_get_other_requests"]["usd"]
    prices = cost["prices"]
    return (f"${cost['total_usd']:.4f}: Lambda ${lam:.4f} "
            f"({items['lambda_compute']['quantity']:.1f} GB-s, "
            f"{items['lambda_requests']['quantity']:.0f} invocations), "
            f"SQS ${items['sqs_requests']['usd']:.4f} "
            f"({items['sqs_requests']['quantity']:,.0f} billed requests), "
            f"S3 ${s3:.4f}, Step Functions ${items['stepfunctions_transitions']['usd']:.4f} "
            f"({items['stepfunctions_transitions']['quantity']:,.0f} transitions); "
            f"{cost['arch']}, {prices['region']} list prices as of {prices['as_of']}")


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """Per-worker and run-wide figures of a metrics document (``fsd report --json``)."""
    times = layer_times(document)
    flows = traffic(document)
    records = sorted(document["per_worker"], key=lambda w: int(w["worker"]))
    workers = []
    for i, record in enumerate(records):
        totals = record.get("totals", {})
        workers.append({
            "worker": times.workers[i],
            "layers": int(np.isfinite(times.start[i]).sum()),
            "send_s": float(times.send[i].sum()), "wait_s": float(times.wait[i].sum()),
            "compute_s": float(times.compute[i].sum()),
            "span_s": float(np.nanmax(times.end[i]) - np.nanmin(times.start[i]))
            if np.isfinite(times.start[i]).any() else 0.0,
            "bytes_sent": int(totals.get("bytes_sent", 0)),
            "bytes_received": int(totals.get("bytes_received", 0)),
            "messages_sent": int(totals.get("messages_sent", 0)),
        })
    busy = sum(w["send_s"] + w["wait_s"] + w["compute_s"] for w in workers)
    waiting = sum(w["wait_s"] for w in workers)
    return {
        "execution": document.get("execution"),
        "workers": len(workers),
        "layers": len(times.layers),
        "start_times_recorded": times.measured_starts,
        "span_s": float(np.nanmax(times.end)) if times.layers else 0.0,
        "wait_share": waiting / busy if busy else 0.0,
        "per_worker": workers,
        "traffic_bytes": {"from_to": flows.matrix.tolist(), "workers": flows.workers,
                          "total": int(flows.matrix.sum())},
        "api_calls": dict(api_call_counts(document)),
        "cost_usd": (document.get("cost") or {}).get("total_usd"),
    }


def summary_lines(document: dict[str, Any]) -> list[str]:
    """The report for people: one line per worker, then the run's totals."""
    figures = summary(document)
    lines = [f"{figures['execution'] or 'run'}: {figures['workers']} workers x "
             f"{figures['layers']} layers, {figures['span_s']:.2f} s from the first layer's "
             f"start to the last one's end"
             + ("" if figures["start_times_recorded"] else " (no start times recorded: "
                "layers laid end to end)"),
             f"{'worker':>6} {'send s':>8} {'wait s':>8} {'compute s':>9} {'MB sent':>9} "
             f"{'MB recv':>9} {'messages':>8}"]
    for w in figures["per_worker"]:
        lines.append(f"{w['worker']:>6} {w['send_s']:>8.2f} {w['wait_s']:>8.2f} "
                     f"{w['compute_s']:>9.2f} {w['bytes_sent'] / 1e6:>9.3f} "
                     f"{w['bytes_received'] / 1e6:>9.3f} {w['messages_sent']:>8,}")
    lines.append(f"waiting is {figures['wait_share']:.0%} of the workers' time; "
                 f"{figures['traffic_bytes']['total'] / 1e6:,.3f} MB between workers")
    calls = api_calls_line(document)
    if calls:
        lines.append(calls)
    if document.get("cost"):
        lines.append(f"modeled AWS cost: {cost_line(document)}")
    return lines
