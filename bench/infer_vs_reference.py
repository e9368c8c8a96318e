"""Two workers on two cores against one process: `fsd infer` vs `fsd reference`.

    .venv/bin/python bench/infer_vs_reference.py [--neurons 4096] [--layers 120] [--workers 2]
        [--block B] [--strategy neuron [data ...]] [--reference-threads 1 2]
        [--microbatches 1] [--repeat 1]

Runs the commands as real subprocesses, one after the other on the same machine, checks
that the categories agree, and prints wall times and the ratio infer / reference (the
goal: at most 0.6). The reference runs once per ``--reference-threads`` value: with 1
thread it is the one-process, one-core baseline the goal was set against; with 2 it
uses both cores too. The wall time of `fsd infer` includes everything a user waits for:
loading, partitioning and cutting shards (both cached after the first run), starting the
workers, the layers, gathering. ``--block`` picks the generator's block size (``fsd
generate --block``; 16 is the denser family the goal was set on, default: calibrated by
N); ``--strategy`` runs `fsd infer` once per strategy named, each against the same
reference runs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import FSD, input_file, network_file, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--block", type=int, help="fsd generate --block (default: by N)")
    parser.add_argument("--strategy", nargs="+", default=["neuron"],
                        help="fsd infer --strategy, one run each (default neuron)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partition", default="hypergraph")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--reference-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--microbatches", type=int, default=1, help="fsd infer --microbatches")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    model = network_file(args.neurons, args.layers, block=args.block)
    inputs = input_file(args.neurons)
    common = ["--model", str(model), "--input", str(inputs), "--dtype", args.dtype, "--quiet"]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference_out, infer_out = Path(tmp) / "reference.txt", Path(tmp) / "infer.txt"
        for _ in range(args.repeat):
            for threads in args.reference_threads:
                results.setdefault(f"reference --threads {threads}", []).append(timed(
                    [FSD, "reference", *common, "--out", str(reference_out),
                     "--threads", str(threads)]))
            # partition and shards are cached after the first run: later runs measure
            # inference
            for strategy in args.strategy:
                results.setdefault(f"infer --workers {args.workers} {strategy}", []).append(
                    timed([FSD, "infer", *common, "--workers", str(args.workers),
                           "--strategy", strategy, "--channel", "memory",
                           "--partition", args.partition,
                           "--microbatches", str(args.microbatches),
                           "--out", str(infer_out), "--expect", str(reference_out)]))
    print(f"\n{model.name}: {args.neurons} x {args.layers}, 10,000 inputs, {args.dtype}, "
          f"wall time per run:")
    for name, seconds in results.items():
        print(f"  fsd {name:<30} " + " ".join(f"{s:7.1f}" for s in seconds) + " s")
    for name, seconds in results.items():
        if name.startswith("infer"):
            for reference, base in results.items():
                if reference.startswith("reference"):
                    print(f"  {name} / {reference} = {min(seconds) / min(base):.2f}")


if __name__ == "__main__":
    main()
