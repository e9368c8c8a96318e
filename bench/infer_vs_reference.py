"""Two workers on two cores against one process: `fsd infer` vs `fsd reference`.

    .venv/bin/python bench/infer_vs_reference.py [--neurons 4096] [--layers 120] [--workers 2]

Runs both commands as real subprocesses, one after the other on the same machine,
checks that the categories agree, and prints wall times and the ratio. The wall time of
`fsd infer` includes everything a user waits for: loading, partitioning (cached after
the first run), cutting shards, starting the workers, the layers, gathering.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Stopwatch, input_file, network_file, say

FSD = str(Path(sys.executable).with_name("fsd"))


def timed(command: list[str]) -> float:
    say("$ " + " ".join(command))
    with Stopwatch() as watch:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()}")
    print(done.stdout.strip())
    return watch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partition", default="hypergraph")
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    model, inputs = network_file(args.neurons, args.layers), input_file(args.neurons)
    with tempfile.TemporaryDirectory() as tmp:
        reference_out, infer_out = Path(tmp) / "reference.txt", Path(tmp) / "infer.txt"
        # warm the partition cache so the comparison measures inference, then time both
        reference_s = timed([FSD, "reference", "--model", str(model), "--input", str(inputs),
                             "--out", str(reference_out), "--dtype", args.dtype, "--quiet"])
        infer_s = timed([FSD, "infer", "--model", str(model), "--input", str(inputs),
                         "--workers", str(args.workers), "--channel", "memory",
                         "--partition", args.partition, "--dtype", args.dtype,
                         "--out", str(infer_out), "--expect", str(reference_out), "--quiet"])
    print(f"\n{args.neurons} x {args.layers}, 10,000 inputs, {args.dtype}: "
          f"reference {reference_s:.1f} s, infer P={args.workers} {infer_s:.1f} s, "
          f"ratio reference/infer = {reference_s / infer_s:.2f}")


if __name__ == "__main__":
    main()
