"""Predict the local demo (`fsd run`: 1024 x 120, 8 workers, queue) on the embedded
emulator with the emulator's own parameters, then run it and compare.

    .venv/bin/python bench/local_demo.py [--no-calibrate] [--out bench/local-demo.json]

1. ``bench/calibrate.py emulator`` measures the embedded moto (call latencies, server
   capacity, loopback bandwidth) and rewrites src/fsd_inference/emulator-model.json
   (skip with --no-calibrate to reuse the committed file);
2. ``fsd predict --service emulator --fresh-partition`` predicts the demo's execution
   (a fresh local stack has no cached partition, so its Plan step partitions);
3. ``fsd run --metrics`` runs the demo; its execution time (StartExecution to the end, from
   the driver) is what the prediction is compared with.

The machine is shared: the load average before and after is printed beside the numbers,
and calibration, prediction and run follow each other so they see similar load.
Takes 3 to 8 minutes.
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
from fsd_inference.model.inputs import sample_input_path

HERE = Path(__file__).resolve().parent
FSD = Path(sys.executable).with_name("fsd")


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-calibrate", action="store_true")
    parser.add_argument("--out", default=str(HERE / "local-demo.json"))
    args = parser.parse_args()
    record: dict[str, object] = {"load_before": load()}
    with tempfile.TemporaryDirectory(prefix="fsd-demo-") as tmp:
        env = {**os.environ, "FSD_CACHE_DIR": str(Path(tmp) / "cache")}
        if not args.no_calibrate:
            subprocess.run([sys.executable, str(HERE / "calibrate.py"), "emulator"],
                           check=True, cwd=HERE)
        os.environ["FSD_CACHE_DIR"] = env["FSD_CACHE_DIR"]
        model, inputs = network_file(1024, 120), sample_input_path()  # fsd run's demo files
        tick = time.perf_counter()
        subprocess.run([str(FSD), "predict", "--model", str(model), "--input", str(inputs),
                        "--workers", "8", "--channel", "queue", "--service", "emulator",
                        "--fresh-partition", "--json", str(Path(tmp) / "p.json"), "--quiet"],
                       check=True, env=env)
        record["predict_s"] = time.perf_counter() - tick
        predicted = json.loads((Path(tmp) / "p.json").read_text())["predicted"]
        subprocess.run([str(FSD), "run", "--metrics",
                        str(Path(tmp) / "m.json"), "--quiet"], check=True, env=env)
        measured = json.loads((Path(tmp) / "m.json").read_text())
    execution = measured["driver"]["driver_s"]["execution_s"]
    history = measured["driver"]["execution_history"]
    record.update({
        "load_after": load(),
        "predicted_p50_s": predicted["time_s"]["p50"],
        "predicted_p95_s": predicted["time_s"]["p95"],
        "predicted_phases_s": predicted["phases_s"],
        "contention": {k: v for k, v in predicted["predict_seconds"].items()
                       if k.endswith("factor")},
        "measured_execution_s": execution, "measured_history": history,
        "ratio": predicted["time_s"]["p50"] / execution,
    })
    Path(args.out).write_text(json.dumps(record, indent=1), encoding="utf-8")
    say(f"predicted p50 {record['predicted_p50_s']:.1f} s (p95 {record['predicted_p95_s']:.1f}),"
        f" measured {execution:.1f} s: ratio {record['ratio']:.2f}; load average "
        f"{record['load_before']:.1f} before, {record['load_after']:.1f} after; written "
        f"{args.out}")


if __name__ == "__main__":
    main()
