"""``fsd report``: read a run's metrics; print a summary, plot it, or both."""

from __future__ import annotations

import argparse

from fsd_inference.analysis.data import load_document
from fsd_inference.analysis.plot import plot_metrics, require_matplotlib
from fsd_inference.analysis.summary import summary, summary_lines
from fsd_inference.cli.common import Subparsers, add_command, json_options, write_json


def cmd_report(args: argparse.Namespace) -> int:
    if args.plot:
        require_matplotlib()
    document = load_document(args.metrics)
    for line in summary_lines(document):
        print(line)
    if args.plot:
        print(f"plot written to {plot_metrics(document, args.plot)}")
    write_json(summary(document), args.json, "summary")
    return 0


def register(sub: Subparsers) -> None:
    rep = add_command(
        sub, "report", summary="summarise and plot a run's metrics (timeline, traffic)",
        description="Read the metrics that fsd infer --json or fsd run --json wrote (or a "
                    "cloud execution's results/<execution>/metrics.json) and print per "
                    "worker the time spent sending, waiting and computing and the bytes "
                    "moved. --plot draws a PNG: a timeline of every worker's layers (send, "
                    "wait, compute from each layer's start), a worker x worker heatmap of "
                    "the bytes exchanged, and the time per worker. Plots need matplotlib "
                    "(the 'plot' extra).",
        examples=["fsd run --json metrics.json && fsd report metrics.json --plot run.png",
                  "fsd report metrics.json --json - | jq .wait_share",
                  "aws s3 cp s3://$BUCKET/results/$EXECUTION/metrics.json . && "
                  "fsd report metrics.json --plot run.png"],
        parents=[json_options("the summary (per worker, traffic matrix)")])
    rep.add_argument("metrics", metavar="METRICS.json", help="a run's metrics document")
    rep.add_argument("--plot", metavar="PNG", help="write the timeline and traffic plot here")
    rep.set_defaults(func=cmd_report)
