"""``fsd run`` with many workers on this machine: the Distributed Map branch, for real.

    .venv/bin/python bench/many_workers.py [--workers 62] [--layers 12] [--channel queue]
                                           [--layers-per-block 3] [--rows N]

Generates (once) the 1024-neuron network with ``--layers`` layers, then runs
``fsd run --workers P --channel C`` on it as a subprocess: the embedded AWS, the stack
deployed from template.yaml, one execution through the state machine (above 40
workers its DistributedBlock), the categories checked against the single-process
reference (``fsd run`` exits 3 when they differ). Meanwhile it samples the memory of
the run's process tree (the fsd process, its moto server, fork servers and sandboxes)
and of the machine as a whole. Prints wall time, the summary ``fsd run`` printed, the
peaks, and the API calls per second the emulator served.

Several blocks (``--layers-per-block``) keep each worker invocation far below Lambda's
15 minutes: on one shared 2-core machine a layer of 62 workers takes tens of seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import network_file, say
from memory import Sampler, mb

FSD = str(Path(sys.executable).with_name("fsd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=62)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--channel", default="queue")
    parser.add_argument("--layers-per-block", type=int, default=3)
    parser.add_argument("--rows", type=int, help="first ROWS inputs (default all 10,000)")
    args = parser.parse_args()
    model = network_file(1024, args.layers)
    with tempfile.TemporaryDirectory(prefix="fsd-bench-many-") as tmp:
        metrics = Path(tmp) / "metrics.json"
        command = [FSD, "run", "--workers", str(args.workers), "--channel", args.channel,
                   "--model", str(model), "--layers-per-block", str(args.layers_per_block),
                   "--out", str(Path(tmp) / "categories.txt"), "--metrics", str(metrics),
                   "--quiet"]
        if args.rows:
            command += ["--rows", str(args.rows)]
        say("$ " + " ".join(command))
        print(f"load average before: {os.getloadavg()}")
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        with Sampler(process.pid, every_s=2.0) as sampler:
            stdout, stderr = process.communicate()
        seconds = time.perf_counter() - started
        print(stdout.strip())
        if process.returncode != 0:
            sys.exit(f"fsd run failed ({process.returncode}): {stderr.strip()}")
        document = json.loads(metrics.read_text())
    peak = sampler.peak
    calls = sum(document.get("summary", {}).get("api_calls", {}).values()) + \
        sum(document.get("api_calls_outside_workers", {}).values())
    execution_s = document["driver"]["driver_s"].get("execution_s", seconds)
    print(f"wall time {seconds:.0f} s (execution {execution_s:.0f} s); map "
          f"{document.get('map')}; {calls:,} API calls, {calls / execution_s:.0f} per second "
          f"of execution")
    print(f"peak of the run's {peak.processes} processes: RSS {mb(peak.rss_kb)}, PSS "
          f"{mb(peak.pss_kb)}, private {mb(peak.private_kb)}; machine in use at its peak "
          f"(everyone's processes): {mb(peak.machine_kb)}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
