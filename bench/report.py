"""Write bench/REPORT.md and its plots: this project's predicted time and cost beside the
published system's measured runs, configuration by configuration.

    .venv/bin/python bench/report.py [--sizes 1024 4096 16384 65536] [--workers 8 20 42 62]
        [--draws 200] [--validation predictions.csv]

For every published configuration (network size x workers x channel) it runs the same
prediction ``fsd predict`` makes (generated network of that size, the MNIST sample
upsampled, hypergraph partition, the published runs' Lambda memory, eu-west-1 prices)
and sets it beside the published time per worker and cost (shared/reference/ANCHORS.md).
Predictions are cached as JSON under bench/report-cache/ (delete to redo); sizes not yet
predicted are listed as pending with the command. ``--validation`` adds the table that
bench/published.py wrote (the time model against the published runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from common import input_file, network_file, say
from fsd_inference.model.load import load_model
from fsd_inference.model.tsv import read_input
from fsd_inference.predict.document import build_document
from fsd_inference.predict.params import load_service_model
from fsd_inference.predict.plot import plot_timeline
from fsd_inference.predict.predictor import PredictOptions, predict
from fsd_inference.predict.published import MEMORY_MB

HERE = Path(__file__).resolve().parent
CACHE = HERE / "report-cache"
REGION = "eu-west-1"
# ANCHORS.md: published time per worker (s) and cost ($), queue then object; None: no result
PUBLISHED: dict[tuple[int, int], tuple[float | None, float | None, float, float]] = {
    (1024, 8): (63.5, 0.0215, 58.2, 0.0539), (1024, 20): (93.6, 0.0684, 67.9, 0.297),
    (1024, 42): (106.1, 0.173, 105.3, 1.25), (1024, 62): (127.8, 0.296, 126.9, 2.34),
    (4096, 8): (91.8, 0.0583, 77.9, 0.0626), (4096, 20): (95.6, 0.120, 75.3, 0.311),
    (4096, 42): (157.3, 0.316, 115.5, 1.33), (4096, 62): (125.3, 0.432, 154.4, 2.83),
    (16384, 8): (255.5, 0.275, 154.2, 0.0935), (16384, 20): (160.2, 0.346, 115.0, 0.353),
    (16384, 42): (130.6, 0.497, 117.8, 1.34), (16384, 62): (141.3, 0.735, 137.9, 2.80),
    (65536, 8): (None, None, 481.7, 0.365), (65536, 20): (546.7, 2.01, 274.2, 0.701),
    (65536, 42): (308.3, 2.08, 213.2, 1.83), (65536, 62): (264.5, 2.34, 204.3, 3.43),
}


# The published system's grid (its networks x its common worker counts).
GRID_SIZES = [1024, 4096, 16384, 65536]
GRID_WORKERS = [8, 20, 42, 62]


def predict_config(neurons: int, workers: int, channel: str, draws: int) -> dict[str, Any]:
    """One configuration's prediction summary (cached)."""
    path = CACHE / f"{neurons}n-{workers}w-{channel}.json"
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cached
    model_path, input_path = network_file(neurons, 120), input_file(neurons)
    say(f"predicting {neurons} x 120, P = {workers}, {channel}")
    started = time.perf_counter()
    network = load_model(model_path)
    inputs = read_input(input_path, neurons=neurons)
    prediction = predict(network, inputs, PredictOptions(
        workers=workers, channel=channel, memory_mb=MEMORY_MB[neurons], arch="x86_64",
        draws=draws), load_service_model())
    document = build_document(prediction, REGION)
    predicted = document["predicted"]
    per_worker = [w["total_s"] for w in document["per_worker"]]
    summary = {
        "neurons": neurons, "workers": workers, "channel": channel,
        "memory_mb": MEMORY_MB[neurons], "time_p50_s": predicted["time_s"]["p50"],
        "time_p95_s": predicted["time_s"]["p95"],
        "time_per_worker_s": statistics.fmean(per_worker),
        "cost_usd": predicted["cost"]["total_usd"],
        "bytes_sent": document["summary"]["totals"]["bytes_sent"],
        "messages_sent": document["summary"]["totals"]["messages_sent"],
        "categories": document["categories"], "seconds": time.perf_counter() - started,
        "predict_seconds": prediction.seconds,
    }
    CACHE.mkdir(exist_ok=True)
    path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if neurons == 1024 and workers == 8 and channel == "queue":
        plot_timeline(prediction.simulation, HERE / "report-timeline-1024n-8w-queue.png",
                      "predicted fsd run: 1024 x 120, P = 8, queue, 1000 MB x86_64 (aws)")
    return summary


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| neurons | workers | channel | published s/worker | predicted s/worker | "
             "ratio | predicted makespan p50 / p95 | published cost | predicted cost | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        q_time, q_cost, o_time, o_cost = PUBLISHED[(row["neurons"], row["workers"])]
        time_pub, cost_pub = (q_time, q_cost) if row["channel"] == "queue" else (o_time, o_cost)
        lines.append(
            f"| {row['neurons']} | {row['workers']} | {row['channel']} | "
            f"{time_pub if time_pub else '(no result)'} | {row['time_per_worker_s']:.1f} | "
            f"{ratio(row['time_per_worker_s'], time_pub)} | {row['time_p50_s']:.1f} / "
            f"{row['time_p95_s']:.1f} | {'$' + str(cost_pub) if cost_pub else '-'} | "
            f"${row['cost_usd']:.4f} | {ratio(row['cost_usd'], cost_pub)} |")
    return lines


def plots(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for channel, marker in (("queue", "o"), ("object", "s")):
        mine = [r for r in rows if r["channel"] == channel]
        published = [PUBLISHED[(r["neurons"], r["workers"])][0 if channel == "queue" else 2]
                     for r in mine]
        costs = [PUBLISHED[(r["neurons"], r["workers"])][1 if channel == "queue" else 3]
                 for r in mine]
        axes[0].scatter([p or float("nan") for p in published],
                        [r["time_per_worker_s"] for r in mine], marker=marker, label=channel)
        axes[1].scatter([c or float("nan") for c in costs], [r["cost_usd"] for r in mine],
                        marker=marker, label=channel)
    for ax, what in zip(axes, ("time per worker (s)", "cost of the run ($)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_xlabel(f"published {what}")
        ax.set_ylabel(f"this project, predicted {what}")
        ax.legend()
    figure.suptitle("fsd-inference (predicted, eu-west-1 prices) vs the published system "
                    "(measured), same network size, workers and channel")
    figure.tight_layout()
    figure.savefig(HERE / "report-vs-published.png", dpi=110)
    plt.close(figure)


def validation(path: Path | None) -> list[str]:
    if path is None or not path.is_file():
        return ["(not run: `bench/published.py ... --out predictions.csv`, then "
                "`bench/report.py --validation predictions.csv`)"]
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    errors = [abs(float(r["ratio"]) - 1) for r in rows]
    worst = max(rows, key=lambda r: max(float(r["ratio"]), 1 / float(r["ratio"])))
    lines = [f"{len(rows)} published runs; median absolute error "
             f"{100 * statistics.median(errors):.1f}%; worst ratio {worst['ratio']} "
             f"({worst['config']}); rows off by more than 2x: "
             f"{sum(1 for r in rows if not 0.5 <= float(r['ratio']) <= 2)}.", "",
             "| config | channel | predicted comm s/worker | published comm s/worker | ratio | "
             "receive calls / LISTs per worker-layer, predicted vs published |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['channel']} | {r['predicted_comm_s_per_worker']} | "
              f"{r['published_comm_s_per_worker']} | {r['ratio']} | "
              f"{r['predicted_polls_per_worker_layer']} vs "
              f"{r['published_polls_per_worker_layer']} |" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=GRID_SIZES)
    parser.add_argument("--workers", type=int, nargs="+", default=GRID_WORKERS)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--validation", type=Path, help="bench/published.py's output CSV")
    parser.add_argument("--only-cached", action="store_true",
                        help="report what is cached, predict nothing new")
    args = parser.parse_args()
    rows, pending = [], []
    # The table always covers the whole grid: what was asked is predicted (unless
    # --only-cached), the rest comes from the cache or is listed as not predicted yet.
    asked = {(n, w) for n in args.sizes for w in args.workers}
    grid = sorted(asked | {(n, w) for n in GRID_SIZES for w in GRID_WORKERS})
    for neurons, workers in grid:
        for channel in ("queue", "object"):
            cached = CACHE / f"{neurons}n-{workers}w-{channel}.json"
            if not cached.is_file() and (args.only_cached or (neurons, workers) not in asked):
                pending.append(f"{neurons} x {workers} {channel}")
                continue
            rows.append(predict_config(neurons, workers, channel, args.draws))
    if rows:
        plots(rows)
    write_report(rows, pending, args)


def acceptance() -> str:
    path = HERE / "timings.json"
    if not path.is_file():
        return "(not run: `bench/timing.py`)"
    timings = json.loads(path.read_text(encoding="utf-8"))
    lines = []
    for config, t in timings.items():
        phases = ", ".join(f"{name} {seconds:.0f} s"
                           for name, seconds in t.get("phases_wall_s", {}).items())
        lines.append(f"- {config.replace(':', ' x 120, P = ')}: {t['wall_s']:.0f} s wall, "
                     f"{t['cpu_s']:.0f} s CPU (load average {t['load_average']} before, "
                     f"{t.get('load_average_after', '?')} after"
                     f"{'; ' + str(t['draws']) + ' draws' if 'draws' in t else ''}"
                     f"{'; phases (wall): ' + phases if phases else ''}): {t['answer']}")
    return "\n".join(lines)


def local() -> str:
    path = HERE / "local-demo.json"
    if not path.is_file():
        return "(not run: `bench/local_demo.py`)"
    demo = json.loads(path.read_text(encoding="utf-8"))
    return (f"Predicted execution p50 {demo['predicted_p50_s']:.1f} s (p95 "
            f"{demo['predicted_p95_s']:.1f} s), measured {demo['measured_execution_s']:.1f} s:"
            f" ratio {demo['ratio']:.2f}. Load average {demo['load_before']:.1f} before, "
            f"{demo['load_after']:.1f} after (the machine is shared). Contention factors of "
            f"the emulator model: {demo['contention']}. Predicted phases: "
            f"{demo['predicted_phases_s']}; measured phases (execution history): "
            f"{demo['measured_history']}.")


def write_report(rows: list[dict[str, Any]], pending: list[str], args: argparse.Namespace
                 ) -> None:
    template = (HERE / "report-template.md").read_text(encoding="utf-8")
    text = template.format(
        acceptance=acceptance(), local=local(),
        table="\n".join(table(rows)),
        pending=("\n".join(f"- {p}" for p in pending) if pending else "none"),
        validation="\n".join(validation(args.validation)),
        timings="\n".join(f"- {r['neurons']} x 120, P = {r['workers']}, {r['channel']}: "
                          f"{r['seconds']:.0f} s" for r in rows),
    )
    (HERE / "REPORT.md").write_text(text, encoding="utf-8")
    # The planner's column (bench/planner.py) from its stored results, so one command
    # regenerates the whole report.
    from planner import RESULTS, section, write_section

    if RESULTS.is_file():
        write_section(HERE / "REPORT.md", section(json.loads(RESULTS.read_text())))
    say(f"written {HERE / 'REPORT.md'}")


if __name__ == "__main__":
    main()
