"""The planner from a row sample against the planner from every row, same job, same run.

    .venv/bin/python bench/sampled_planner.py [--neurons 1024] [--layers 120]
        [--samples 1024 256] [--memory 1024]

Plans the job (the generated network, 10,000 inputs) with the exact trace (every row,
``fsd plan``'s default) and with each ``--samples`` size (predict/sampled.py: what the
Plan step does for ``"strategy": "auto"``), and prints for each: the planning time, the
choice, and how far every plan's predicted p50 and cost are from the exact trace's
(median and worst over the plans both ranked). ``--memory``: the workers' fixed memory,
as in the Plan step (0: the planner chooses, as ``fsd plan`` does). Budget: about a
minute at 1024 x 120.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import input_file, network_file
from fsd_inference.model.load import load_model
from fsd_inference.model.tsv import read_input
from fsd_inference.planner import Constraints, Settings, plan_job
from fsd_inference.planner.choose import describe
from fsd_inference.predict.params import load_service_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--samples", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--max-workers", type=int, default=64)
    args = parser.parse_args()
    network = load_model(network_file(args.neurons, args.layers))
    inputs = read_input(input_file(args.neurons), neurons=network.neurons)
    model = load_service_model("aws")
    figures: dict[int | None, dict[str, tuple[float, float]]] = {}
    for rows in (None, *args.samples):
        started = time.perf_counter()
        result = plan_job(network, inputs, Constraints("cost"),
                          Settings(sample_rows=rows, memory_mb=args.memory or None), model,
                          args.max_workers)
        seconds = time.perf_counter() - started
        figures[rows] = {describe(e): (e.p50, e.cost_usd) for e in result.evaluated
                         if e.refused is None}
        print(f"{'every row' if rows is None else f'{rows:,} sampled rows':>18}: "
              f"{seconds:5.1f} s, chose {describe(result.chosen)}: p50 "
              f"{result.chosen.p50:.2f} s, ${result.chosen.cost_usd:.6f}")
    exact = figures[None]
    for rows in args.samples:
        both = [k for k in exact if k in figures[rows]]
        for i, name in enumerate(("p50", "cost")):
            errors = [abs(figures[rows][k][i] / exact[k][i] - 1) for k in both]
            print(f"{rows:>6,} rows, {name:>4}: {len(both)} plans, error median "
                  f"{statistics.median(errors):.1%}, worst {max(errors):.1%}")


if __name__ == "__main__":
    main()
