"""The long fuzzing run: thousands of damaged inputs per reader, bounded memory.

    .venv/bin/python bench/fuzz_readers.py [--examples 3000] [--address-space-gib 4]

Runs tests/unit/test_fuzz_readers.py (the same tests ``make test`` runs with 25 cases per
reader) with ``--examples`` cases per reader, in a subprocess whose address space is
capped (RLIMIT_AS), so a forged size that made a reader allocate gigabytes fails the run
with a MemoryError instead of passing unnoticed. Every reader call is measured with
tracemalloc; the report gives, per reader, the cases run, how they ended (read, or
which of the project's errors) and the peak allocation of one call. The inputs are at
most a few KiB (the seeds: a 64-neuron network bundle of ~6 KiB, a 12 x 40 block frame,
a 3-line TSV), so the stated bound is ``--peak-bound-mib`` (default 64 MiB) per call.
Budget: 14 minutes at 3,000 cases per reader on the shared 2-core machine (load ~20).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "unit" / "test_fuzz_readers.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--address-space-gib", type=float, default=4.0)
    parser.add_argument("--peak-bound-mib", type=float, default=64.0)
    args = parser.parse_args()
    limit = int(args.address_space_gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory(prefix="fsd-fuzz-bench-") as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "FSD_FUZZ_EXAMPLES": str(args.examples),
               "FSD_FUZZ_REPORT": str(report)}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(TESTS)], cwd=ROOT, env=env, preexec_fn=cap, check=False)
        seconds = time.perf_counter() - started
        if not report.is_file():
            print("no report written: the run failed before the fuzz tests finished")
            return 1
        data = json.loads(report.read_text())
    bound = args.peak_bound_mib * 2**20
    print(f"{args.examples} examples per reader, address space capped at "
          f"{args.address_space_gib:g} GiB, {seconds:.0f} s; pytest exit {done.returncode}")
    print(f"{'reader':<12} {'cases':>6} {'peak MiB':>9}  outcomes")
    over = []
    for reader in sorted(data["cases"]):
        peak = data["peak_bytes"].get(reader, 0)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(data["outcomes"][reader].items()))
        print(f"{reader:<12} {data['cases'][reader]:>6} {peak / 2**20:>9.2f}  {outcomes}")
        if peak > bound:
            over.append(reader)
    if over:
        print(f"peak allocation above {args.peak_bound_mib:g} MiB: {', '.join(over)}")
    return 1 if over or done.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
