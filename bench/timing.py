"""How long `fsd predict` takes for the issue's acceptance configurations.

    .venv/bin/python bench/timing.py [--configs 1024:8 1024:20 1024:42 1024:62 1024:1000 16384:62]

Runs the real command (partitions taken from the cache when present: partitioning is the
Plan step's work, not the prediction's) and records wall and CPU seconds, the load
average before and after, and the command's own phases (reading the partition, building
the plan and shards, counting with the reference kernel and the codec, sampling the task
graph; wall seconds, from its --json document) into bench/timings.json, which
bench/report.py prints. The machine is shared: under load the wall time grows, the CPU
time much less, so both are kept. Budget: under 5 minutes each (acceptance 1 of issue 8).
Networks and inputs come from bench/common.py's cache (generated on first use; that
time is not the prediction's and is printed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Stopwatch, input_file, network_file, say
from fsd_inference.predict.engine import DEFAULT_DRAWS

HERE = Path(__file__).resolve().parent
FSD = Path(sys.executable).with_name("fsd")
PHASES = ("partition_s", "plan_s", "count_s", "simulate_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+",
                        default=["1024:8", "1024:20", "1024:42", "1024:62", "1024:1000",
                                 "16384:62"])
    parser.add_argument("--out", default=str(HERE / "timings.json"))
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS)
    args = parser.parse_args()
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.is_file() else {}
    for config in args.configs:
        neurons, workers = (int(v) for v in config.split(":"))
        with Stopwatch() as setup:
            model, inputs = network_file(neurons, 120), input_file(neurons)
        if setup.seconds > 1:
            say(f"{config}: network and input ready in {setup.seconds:.0f} s (not timed below)")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as scratch, Stopwatch() as clock:
            document = Path(scratch) / "prediction.json"
            done = subprocess.run([str(FSD), "predict", "--model", str(model), "--input",
                                   str(inputs), "--workers", str(workers), "--quiet",
                                   "--draws", str(args.draws), "--json", str(document)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{config}: {done.stderr.strip()}")
            predicted = json.loads(document.read_text(encoding="utf-8"))["predicted"]
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        load_after = os.getloadavg()[0]
        phases = {name.removesuffix("_s"): round(float(value), 1)
                  for name, value in predicted["predict_seconds"].items()
                  if name in PHASES}
        results[config] = {"wall_s": round(clock.seconds, 1), "cpu_s": round(cpu, 1),
                           "load_average": round(load, 1),
                           "load_average_after": round(load_after, 1),
                           "draws": args.draws, "phases_wall_s": phases,
                           "kernel_cpu_s": round(float(
                               predicted["measured_here"]["kernel_cpu_s"]), 1),
                           "answer": done.stdout.splitlines()[0]}
        say(f"{config}: {clock.seconds:.0f} s wall, {cpu:.0f} s CPU (load {load:.1f} -> "
            f"{load_after:.1f}), phases {phases}: {done.stdout.splitlines()[0]}")
        path.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
