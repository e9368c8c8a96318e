"""`fsd reference` (the fused kernel) against SuiteSparse:GraphBLAS, same run, same machine.

    .venv/bin/python bench/kernel.py [--neurons 1024 4096] [--layers 120] [--blocks 16 2]
        [--threads 1 2] [--dtype float64] [--repeat 1] [--json FILE]

Needs the bench extra: ``pip install -e '.[bench]'`` (python-graphblas).

For every generated network (``fsd generate --block B``; cached under .cache) and every
thread count T, one after the other on the same machine:
- ``fsd reference --threads T`` as a subprocess: the inference time it reports (the
  layers only; reading the files is not timed) and the process's wall time;
- a child process that reads the same files with the project's readers, converts them to
  GraphBLAS matrices (not timed, like the reading) and times the same layers with
  GraphBLAS on T threads (``nthreads``): ``Y = Y @ W`` (plus_times), bias on the stored
  entries, ReLU (select > 0, which drops the zeros), cap, in place, the way the Graph
  Challenge's GraphBLAS reference (LAGraph) writes it. SciPy and the fused kernel store
  only nonzero sums before the bias; GraphBLAS keeps an exactly cancelled sum as an
  entry, which a negative bias then drops, so for the default (negative) biases both
  compute the same thing; with a bias >= 0 the child first drops zero sums (an extra
  select, as it would need).
Both must give the same categories. Prints seconds, edges/s (inputs x edges / s) and the
ratio GraphBLAS time / fsd time (the goal: >= 1.5 with one thread and with two).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import Stopwatch, input_file, network_file, say

FSD = str(Path(sys.executable).with_name("fsd"))
REPORTED = re.compile(r"\| ([0-9.]+) s \| ([0-9.e+]+) edges/s")


def graphblas_child(model: str, inputs: str, threads: int, dtype: str) -> None:
    """Run in a child process: the layers with GraphBLAS; prints one JSON line."""
    import graphblas as gb
    import scipy.sparse as sp

    from fsd_inference.constants import ACTIVATION_CAP
    from fsd_inference.model.load import load_model
    from fsd_inference.model.tsv import read_input

    gb.ss.config["nthreads"] = threads
    network = load_model(model)
    x = read_input(inputs, neurons=network.neurons, dtype=dtype)
    weights = [gb.io.from_scipy_sparse(w.astype(dtype)) for w in network.layers]
    y = gb.io.from_scipy_sparse(sp.csr_matrix(x, dtype=dtype))
    bias = network.bias
    started = time.perf_counter()
    for w in weights:
        y = y.mxm(w, gb.semiring.plus_times).new()
        if bias >= 0:
            y << y.select("!=", 0)
        y << y.apply(gb.binary.plus, right=bias)
        y << y.select(">", 0)
        y << y.apply(gb.binary.min, right=ACTIVATION_CAP)
    seconds = time.perf_counter() - started
    sums = y.reduce_rowwise(gb.monoid.plus).new()
    rows, values = sums.to_coo()
    categories = (np.sort(rows[values != 0]) + 1).tolist()
    print(json.dumps({"seconds": seconds, "categories": categories,
                      "threads": int(gb.ss.config["nthreads"])}))


def run(command: list[str]) -> tuple[str, float]:
    say("$ " + " ".join(command))
    with Stopwatch() as watch:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout, watch.seconds


def fsd_reference(model: Path, inputs: Path, threads: int, dtype: str, out: Path
                  ) -> dict[str, Any]:
    stdout, wall = run([FSD, "reference", "--model", str(model), "--input", str(inputs),
                        "--out", str(out), "--dtype", dtype, "--threads", str(threads),
                        "--kernel", "fused", "--quiet"])
    match = REPORTED.search(stdout)
    if match is None:
        sys.exit(f"unexpected fsd reference output: {stdout!r}")
    categories = [int(line) for line in out.read_text().split()]
    return {"seconds": float(match.group(1)), "wall_s": wall, "categories": categories}


def graphblas(model: Path, inputs: Path, threads: int, dtype: str) -> dict[str, Any]:
    stdout, wall = run([sys.executable, __file__, "--graphblas-child", str(model), str(inputs),
                        str(threads), dtype])
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--graphblas-child":
        model, inputs, threads, dtype = sys.argv[2:6]
        graphblas_child(model, inputs, int(threads), dtype)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 2],
                        help="generator block sizes (2 is fsd generate's default)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pair")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for neurons in args.neurons:
            inputs = input_file(neurons)
            for block in args.blocks:
                model = network_file(neurons, args.layers, block=block)
                edges = neurons * 32 * args.layers
                for threads in args.threads:
                    for _ in range(args.repeat):
                        ours = fsd_reference(model, inputs, threads, args.dtype,
                                             Path(tmp) / "cats.txt")
                        theirs = graphblas(model, inputs, threads, args.dtype)
                        if ours["categories"] != theirs["categories"]:
                            sys.exit(f"{neurons} block {block}: GraphBLAS and fsd disagree on "
                                     f"the categories")
                        rows.append({"neurons": neurons, "block": block, "threads": threads,
                                     "fsd_s": ours["seconds"], "fsd_wall_s": ours["wall_s"],
                                     "graphblas_s": theirs["seconds"],
                                     "graphblas_wall_s": theirs["wall_s"],
                                     "categories": len(ours["categories"]),
                                     "edges_per_s": 10_000 * edges / ours["seconds"],
                                     "ratio": theirs["seconds"] / ours["seconds"]})
    print(f"\n{args.layers} layers, 10,000 inputs, {args.dtype}; inference time only "
          f"(reading files not timed); ratio = GraphBLAS s / fsd s")
    print(f"{'N':>5} {'block':>5} {'threads':>7} {'fsd s':>7} {'GraphBLAS s':>11} "
          f"{'ratio':>6} {'fsd edges/s':>11} {'categories':>10}")
    for r in rows:
        print(f"{r['neurons']:>5} {r['block']:>5} {r['threads']:>7} {r['fsd_s']:>7.2f} "
              f"{r['graphblas_s']:>11.2f} {r['ratio']:>6.2f} {r['edges_per_s']:>11.3e} "
              f"{r['categories']:>10,}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1),
                                   encoding="utf-8")


if __name__ == "__main__":
    main()
