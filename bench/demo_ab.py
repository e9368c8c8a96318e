"""``make run`` (the demo, ``fsd run``) timed for an older commit and this checkout,
interleaved in one session, so both see the same machine and about the same load.

    .venv/bin/python bench/demo_ab.py --base 5534398 [--pairs 2] [--out demo-ab.json]

The older commit is extracted into a temporary folder (git archive) and runs with this
venv's packages, importing its own code first (PYTHONPATH=<folder>/src, and the compiled
layer kernel copied in, so both run the same C kernel; its Lambda code package is zipped
from its own src/). Runs alternate, base first; both use this checkout's cache
(FSD_CACHE_DIR: the demo network, its partition and the reference categories, as
``make run`` finds them after its first run) and run as ``make run`` now runs (bytecode
caching on, after one warm-up import of what a run imports, so neither pays for
compiling). Each run records the wall time of the whole command, what ``fsd run
--json`` reports (driver phases, the execution's phases from its history, API calls by
kind) and the 1-minute load average before and after. The machine is shared: read the
ratio of medians, and the load beside it. About 3 minutes per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL = ROOT / "src" / "fsd_inference" / "kernel"
WARM_UP = ("import fsd_inference.cli, fsd_inference.app.driver, fsd_inference.local.emulator, "
           "fsd_inference.handlers.worker, fsd_inference.handlers.plan, "
           "fsd_inference.handlers.gather, fsd_inference.handlers.cleanup, "
           "moto.stepfunctions.parser.backend.execution, moto.cloudformation.models, "
           "moto.awslambda.models, samtranslator.translator.translator")


def load() -> float:
    return os.getloadavg()[0]


def checkout(commit: str, into: Path) -> Path:
    """The commit's files (git archive: the repository's worktrees are left alone)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for library in KERNEL.glob("*.so"):  # built by the install, not tracked
        shutil.copy2(library, into / "src" / "fsd_inference" / "kernel" / library.name)
    return into


def run_demo(code_root: Path, scratch: Path, label: str) -> dict[str, Any]:
    metrics = scratch / f"{label}.json"
    env = {**os.environ, "PYTHONPATH": str(code_root / "src"), "PYTHONDONTWRITEBYTECODE": "",
           "FSD_CACHE_DIR": os.environ.get("FSD_CACHE_DIR") or str(ROOT / ".cache" /
                                                                  "fsd-inference")}
    before = load()
    tick = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fsd_inference.cli", "run", "--quiet",
                    "--out", str(scratch / f"{label}.txt"), "--json", str(metrics)],
                   check=True, cwd=scratch, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tick
    document = json.loads(metrics.read_text())
    driver = document["driver"]
    history = driver["execution_history"]
    return {"label": label, "wall_s": round(wall, 1), "load_before": before,
            "load_after": load(), "driver_s": {k: round(v, 1) for k, v in
                                               driver["driver_s"].items()},
            "plan_s": history.get("plan_s"), "blocks_s": history.get("blocks_s"),
            "gather_s": history.get("gather_s"), "cleanup_s": history.get("cleanup_s"),
            "api_calls": document["summary"]["api_calls"],
            "reference_match": driver["reference_match"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "demo-ab.json"))
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fsd-demo-ab-") as tmp:
        scratch = Path(tmp)
        base = checkout(args.base, scratch / "base")
        subprocess.run([sys.executable, "-c", WARM_UP], check=True,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
        for pair in range(args.pairs):
            for label, root in (("base", base), ("this", ROOT)):
                run = run_demo(root, scratch, f"{label}-{pair}")
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary: dict[str, Any] = {"base": args.base, "runs": runs}
    for label in ("base", "this"):
        walls = [r["wall_s"] for r in runs if r["label"].startswith(label)]
        summary[f"{label}_median_wall_s"] = statistics.median(walls)
    summary["ratio"] = round(summary["this_median_wall_s"] / summary["base_median_wall_s"], 3)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"median wall: base {summary['base_median_wall_s']:.1f} s, this "
          f"{summary['this_median_wall_s']:.1f} s, ratio {summary['ratio']:.2f}; "
          f"load averages {[r['load_before'] for r in runs]}")


if __name__ == "__main__":
    main()
