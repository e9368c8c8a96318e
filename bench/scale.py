"""Bounded memory at Graph Challenge scale: ``fsd generate``, ``fsd reference`` and
``fsd plan`` as separate processes under ``/usr/bin/time -v`` (peak RSS, wall time).

    .venv/bin/python bench/scale.py --neurons 65536 --layers 1920 --rows 1000
    .venv/bin/python bench/scale.py --neurons 65536 --layers 120 --plan 62 --no-reference

The bundle goes under the cache directory ($FSD_CACHE_DIR, default ./.cache/fsd-inference)
and is deleted at the end unless ``--keep`` (65536 x 1920 is about 8 GB: the disk is
shared). The input is the first ``--rows`` rows of the MNIST sample, upsampled to N
(``fsd inputs --rows``). Budget: 65536 x 1920 generation a few minutes; its reference on
1,000 inputs tens of minutes on 2 cores; the 62-worker plan of 65536 x 120 about ten.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from fsd_inference.config import cache_dir

TIME = "/usr/bin/time"
FSD = [sys.executable, "-m", "fsd_inference.cli"]


def timed(label: str, args: list[str]) -> dict[str, object]:
    """Run ``fsd args`` under ``/usr/bin/time -v``; its stdout, wall time and peak RSS."""
    started = time.perf_counter()
    done = subprocess.run([TIME, "-v", *FSD, *args], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    def field(name: str) -> float:
        found = re.search(rf"{name}: ([\d.]+)", done.stderr)
        return float(found.group(1)) if found else float("nan")

    # CPU seconds beside wall time: on a shared machine the wall clock includes waiting
    cpu = field(r"User time \(seconds\)") + field(r"System time \(seconds\)")
    result = {"step": label, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "peak_rss_mb": round(field(r"Maximum resident set size \(kbytes\)") / 1024),
              "stdout": done.stdout.strip().splitlines()[-6:]}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=65536)
    parser.add_argument("--layers", type=int, default=1920)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--plan", type=int, metavar="WORKERS",
                        help="also run fsd plan --workers WORKERS (hypergraph)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the bundle")
    args = parser.parse_args()

    root = cache_dir() / "scale"
    root.mkdir(parents=True, exist_ok=True)
    bundle = root / f"radixnet-{args.neurons}x{args.layers}-seed0.fsdm"
    inputs = root / f"mnist-{args.neurons}-first{args.rows}.tsv"
    try:
        if not bundle.is_file():
            timed("generate", [
                "generate", "--neurons", str(args.neurons), "--layers", str(args.layers),
                "--binary", str(bundle), "--quiet"])
        print(json.dumps({"bundle_bytes": bundle.stat().st_size}), flush=True)
        if not args.no_reference:
            if not inputs.is_file():
                timed("inputs", [
                    "inputs", "--neurons", str(args.neurons), "--rows", str(args.rows),
                    "--out", str(inputs)])
            timed("reference", [
                "reference", "--model", str(bundle), "--input", str(inputs),
                "--out", str(root / f"categories-{args.neurons}x{args.layers}.txt"),
                "--quiet"])
        if args.plan:
            timed("plan", [
                "plan", "--model", str(bundle), "--workers", str(args.plan),
                "--json", str(root / f"plan-{args.neurons}x{args.layers}-p{args.plan}.json")])
    finally:
        if not args.keep:
            Path(bundle).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
