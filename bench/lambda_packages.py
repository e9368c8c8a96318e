"""The Lambda functions' package sizes, and a run of every handler from such packages.

    .venv/bin/python bench/lambda_packages.py [--from .aws-sam/build] [--smoke] [--json FILE]

Sizes: each function's package is built exactly as ``sam build`` builds it (src/Makefile,
``make build-<Function>`` with ARTIFACTS_DIR; wheels for python3.13 on arm64), unless
``--from`` names a ``sam build`` output to measure instead, and its unzipped size is set
beside Lambda's limit for a function and its layers: 250 MB = 262,144,000 bytes unzipped
(the quota's exact figure). The project's target is under 80% of it.

``--smoke`` (about a minute): builds the Plan and Worker packages again for this machine
(x86_64 wheels for this Python, the same Makefile and the same pruning), and runs one
small execution by hand the way the state machine would: Plan, then each block's workers
at once (one process each), Gather, Cleanup, every step in a fresh interpreter whose
imports come only from its function's package plus boto3 (which Lambda's runtime
provides), against an embedded moto server. The categories must equal the reference.
That is what catches an import the package lacks (a pruned scipy subpackage imported
inside a function, say), which the test suite, running from the source tree, cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

from common import Stopwatch, say
from fsd_inference.aws import s3_client
from fsd_inference.local import local_aws
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.storage import S3Storage

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("PlanFunction", "WorkerFunction", "GatherFunction", "CleanupFunction")
LIMIT_BYTES = 262_144_000  # Lambda: 250 MB unzipped, function and layers together
TARGET_SHARE = 0.80
SMOKE_WORKERS = 3
SMOKE_ROWS = 300
# One handler call in a fresh interpreter: the event on stdin, the result to a file
# (stdout is the function's log, as on Lambda).
CALL = """
import json, sys
from fsd_inference.handlers import {module} as step
result = step.handler(json.load(sys.stdin))
open(sys.argv[1], "w").write(json.dumps(result))
"""


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(function: str, target: Path, python: str | None = None, arch: str | None = None
          ) -> Path:
    """``make build-<function>`` from src/ into ``target``, as sam build runs it."""
    target.mkdir(parents=True, exist_ok=True)
    command = ["make", "--no-print-directory", "-C", str(ROOT / "src"), f"build-{function}",
               f"ARTIFACTS_DIR={target}", f"PYTHON={sys.executable}"]
    if python:
        command.append(f"LAMBDA_PYTHON={python}")
    if arch:
        command.append(f"LAMBDA_ARCH={arch}")
    subprocess.run(command, check=True, capture_output=True, text=True)
    return target


def largest_parts(path: Path, count: int = 6) -> list[tuple[str, int]]:
    parts = [(p.name, folder_bytes(p) if p.is_dir() else p.stat().st_size)
             for p in path.iterdir()]
    return sorted(parts, key=lambda item: -item[1])[:count]


def sizes(source: Path | None, scratch: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for function in FUNCTIONS:
        folder = source / function if source else build(function, scratch / function)
        size = folder_bytes(folder)
        report[function] = {"bytes": size, "share_of_limit": size / LIMIT_BYTES,
                            "largest": largest_parts(folder)}
        say(f"{function}: {size / 1e6:,.1f} MB unzipped = {size / LIMIT_BYTES:.1%} of the "
            f"250 MB limit ({'under' if size < TARGET_SHARE * LIMIT_BYTES else 'OVER'} "
            f"{TARGET_SHARE:.0%}); largest: "
            + ", ".join(f"{name} {n / 1e6:.1f}" for name, n in report[function]["largest"]))
    return report


def _runtime(scratch: Path) -> Path:
    """What Lambda's Python runtime provides besides the package: boto3 (its version here)."""
    target = scratch / "runtime"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                    "--target", str(target), f"boto3=={boto3.__version__}"], check=True)
    return target


def _call(module: str, package: Path, runtime: Path, event: dict[str, Any],
          environment: dict[str, str], scratch: Path) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(dir=scratch, suffix=".json")[1])
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{package}{os.pathsep}{runtime}",
           "PYTHONNOUSERSITE": "1", **environment}
    done = subprocess.run([sys.executable, "-S", "-c", CALL.format(module=module), str(out)],
                          input=json.dumps(event), capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed from its package {package}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def smoke(scratch: Path) -> dict[str, Any]:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = platform.machine()
    with Stopwatch() as watch:
        plan_package = build("PlanFunction", scratch / "host-plan", python, arch)
        worker_package = build("WorkerFunction", scratch / "host-worker", python, arch)
        runtime = _runtime(scratch)
    say(f"smoke: packages for {arch} / Python {python} built in {watch.seconds:.0f} s")
    network = generate(GeneratorParams(1024, 6, 3))
    expected = infer(network, read_input(sample_input_path(), neurons=1024)[:SMOKE_ROWS])
    with local_aws() as aws, Stopwatch() as watch:
        assert aws.bucket and aws.endpoint_url
        storage = S3Storage(aws.bucket, s3_client(aws))
        save_network(network, scratch / "net.fsdm")
        storage.put_file("models/net.fsdm", scratch / "net.fsdm")
        storage.put_file("inputs/sample.tsv.gz", sample_input_path())
        environment = {"AWS_ENDPOINT_URL": aws.endpoint_url, "FSD_BUCKET": aws.bucket,
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": aws.region, "FSD_SCRATCH_DIR": str(scratch),
                       "POWERTOOLS_TRACE_DISABLED": "true"}
        execution = "smoke-from-packages"
        request = {"model": "models/net.fsdm", "input": "inputs/sample.tsv.gz",
                   "rows": SMOKE_ROWS, "workers": SMOKE_WORKERS, "channel": "queue",
                   "partition": "hypergraph", "layers_per_block": 3, "strategy": "neuron"}
        state = _call("plan", plan_package, runtime, {"execution": execution,
                                                      "request": request}, environment,
                      scratch)
        run = state["run"]
        with ThreadPoolExecutor(SMOKE_WORKERS) as pool:
            for block in range(run["blocks"]):
                events = [{"run": run, "block": block, "worker": p} for p in state["items"]]
                list(pool.map(lambda e: _call("worker", worker_package, runtime, e,
                                              environment, scratch), events))
        summary = _call("gather", worker_package, runtime, {"run": run}, environment,
                        scratch)
        _call("cleanup", worker_package, runtime, {"execution": execution, "state": None},
              environment, scratch)
        categories = storage.get_bytes(summary["categories_uri"].split("/", 3)[3])
    found = [int(x) for x in categories.split()]
    match = found == expected.categories.tolist()
    say(f"smoke: Plan, {run['blocks']} blocks of {SMOKE_WORKERS} workers, Gather, Cleanup from "
        f"the packages in {watch.seconds:.1f} s: {len(found)} categories, "
        f"{'identical to' if match else 'DIFFERENT from'} the reference")
    if not match:
        raise SystemExit(1)
    return {"arch": arch, "python": python, "categories": len(found), "match": match}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="measure this sam build output (e.g. .aws-sam/build) instead "
                             "of building")
    parser.add_argument("--smoke", action="store_true",
                        help="also run every handler from packages built for this machine")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsd-packages-") as tmp:
        report: dict[str, Any] = {"limit_bytes": LIMIT_BYTES,
                                  "functions": sizes(args.source, Path(tmp))}
        if args.smoke:
            report["smoke"] = smoke(Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
