"""How long `fsd predict` takes for the issue's acceptance configurations.

    .venv/bin/python bench/timing.py [--configs 1024:8 1024:20 1024:42 1024:62 1024:1000 16384:62]

Runs the real command (partitions taken from the cache when present: partitioning is the
Plan step's work, not the prediction's) and records wall and CPU seconds and the load
average into bench/timings.json, which bench/report.py prints. Budget: under 5 minutes
each (acceptance 1 of issue 8).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import input_file, network_file, say

HERE = Path(__file__).resolve().parent
FSD = Path(sys.executable).with_name("fsd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+",
                        default=["1024:8", "1024:20", "1024:42", "1024:62", "1024:1000",
                                 "16384:62"])
    parser.add_argument("--out", default=str(HERE / "timings.json"))
    args = parser.parse_args()
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.is_file() else {}
    for config in args.configs:
        neurons, workers = (int(v) for v in config.split(":"))
        model, inputs = network_file(neurons, 120), input_file(neurons)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        tick = time.perf_counter()
        done = subprocess.run([str(FSD), "predict", "--model", str(model), "--input",
                               str(inputs), "--workers", str(workers), "--quiet"],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - tick
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode:
            raise SystemExit(f"{config}: {done.stderr.strip()}")
        results[config] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                           "load_average": round(load, 1),
                           "answer": done.stdout.splitlines()[0]}
        say(f"{config}: {wall:.0f} s wall, {cpu:.0f} s CPU (load {load:.1f}): "
            f"{done.stdout.splitlines()[0]}")
        path.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
