"""Overlap of compute and exchange: the worker loop by row parts under network latency.

    .venv/bin/python bench/overlap.py [--neurons 1024] [--layers 120] [--workers 8]
        [--latency 0.02] [--parts 1 2 4 8] [--repeat 1] [--kernel auto] [--json FILE]

Runs ``fsd infer``'s engine (run_inference: real worker processes, the memory channel's
frames) with every message delayed by ``--latency`` seconds (the fault wrapper's fixed
latency, channels/faults.py), once per part count, in the same process, one after the
other. ``--parts 1`` is the loop without overlap: send a layer, wait for all of it,
compute. Every run's activations are compared with the first run's, raw bytes, and its
categories with the reference's. Prints wall time of the workers phase per part count
and the saving against one part.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import input_file, network_file, say
from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.channels.faults import Faults, faulty_factory
from fsd_inference.channels.memory import MemoryTransport
from fsd_inference.model.binary import load_network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per message")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeat", type=int, default=1, help="runs per part count")
    parser.add_argument("--kernel", default=None, help="layer kernel (default: auto)")
    parser.add_argument("--rows", type=int, default=None, help="first ROWS inputs only")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    network = load_network(network_file(args.neurons, args.layers))
    inputs = read_input(input_file(args.neurons), neurons=args.neurons)
    if args.rows:
        inputs = inputs[:args.rows]
    expected = infer(network, inputs).categories
    factory = faulty_factory(MemoryTransport, Faults(latency_s=args.latency))
    runs: list[dict[str, float | int]] = []
    first = None
    for _ in range(args.repeat):
        for parts in args.parts:
            say(f"P={args.workers}, {parts} part(s), {args.latency * 1000:g} ms per message")
            started = time.perf_counter()
            result = run_inference(network, inputs,
                                   InferOptions(workers=args.workers, microbatches=parts,
                                                kernel=args.kernel),
                                   transport_factory=factory)
            wall = time.perf_counter() - started
            if not np.array_equal(result.categories, expected):
                raise SystemExit(f"{parts} parts: categories differ from the reference")
            data = result.activations.data.tobytes()
            if first is not None and data != first:
                raise SystemExit(f"{parts} parts: activations differ from the first run")
            first = data
            totals = result.metrics_document()["summary"]["totals"]
            runs.append({"parts": parts, "workers_s": result.phases["workers_s"],
                         "wall_s": wall, "messages": int(totals["messages_sent"]),
                         "wait_s": float(totals["wait_s"]),
                         "compute_s": float(totals["compute_s"])})
    print(f"\n{args.neurons} x {args.layers}, {inputs.shape[0]:,} inputs, P = {args.workers}, "
          f"{args.latency * 1000:g} ms latency per message, memory channel")
    print(f"{'parts':>5} {'workers s':>10} {'wall s':>8} {'vs 1 part':>9} {'messages':>9} "
          f"{'wait s (sum)':>12} {'compute s (sum)':>15}")
    base = [r["workers_s"] for r in runs if r["parts"] == 1]
    for r in runs:
        ratio = f"{r['workers_s'] / np.mean(base):.2f}" if base else "-"
        print(f"{r['parts']:>5} {r['workers_s']:>10.2f} {r['wall_s']:>8.2f} {ratio:>9} "
              f"{r['messages']:>9,} {r['wait_s']:>12.1f} {r['compute_s']:>15.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1),
                                   encoding="utf-8")


if __name__ == "__main__":
    main()
