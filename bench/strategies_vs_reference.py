"""Strategies against one process: `fsd infer --strategy S` vs `fsd reference`, same run.

    .venv/bin/python bench/strategies_vs_reference.py [--neurons 1024] [--layers 120] \
        [--workers 2] [--strategies data pipeline neuron] [--repeat 1]

Runs `fsd reference` and then `fsd infer` once per strategy as real subprocesses on the
same machine, each checked against the reference's categories (`--expect`), and prints
wall times and the ratio infer / reference. `fsd infer` wall time includes everything a
user waits for: planning (partitions cached after the first run), writing shards and
input slices to the run folder, starting one process per task, the layers, gathering
and cleaning up. Interleaving the commands `--repeat` times evens out a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import FSD, input_file, network_file, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=["data", "pipeline"])
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    model, inputs = network_file(args.neurons, args.layers), input_file(args.neurons)
    times: dict[str, list[float]] = {"reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        reference_out = Path(tmp) / "reference.txt"
        for _ in range(args.repeat):
            times["reference"].append(timed(
                [FSD, "reference", "--model", str(model), "--input", str(inputs),
                 "--out", str(reference_out), "--dtype", args.dtype, "--quiet"]))
            for strategy in args.strategies:
                times.setdefault(strategy, []).append(timed(
                    [FSD, "infer", "--model", str(model), "--input", str(inputs),
                     "--workers", str(args.workers), "--strategy", strategy,
                     "--dtype", args.dtype, "--out", str(Path(tmp) / f"{strategy}.txt"),
                     "--expect", str(reference_out), "--quiet"]))
    reference = statistics.median(times["reference"])
    print(f"\n{args.neurons} x {args.layers}, 10,000 inputs, {args.dtype}, "
          f"{args.workers} task(s), median of {args.repeat}:")
    print(f"  reference: {reference:.1f} s")
    for strategy in args.strategies:
        median = statistics.median(times[strategy])
        print(f"  infer --strategy {strategy}: {median:.1f} s "
              f"(infer / reference = {median / reference:.2f})")


if __name__ == "__main__":
    main()
