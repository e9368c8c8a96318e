"""Many local Lambda sandboxes at once: fork server against one interpreter each.

    .venv/bin/python bench/sandboxes.py [--sandboxes 62]

Both ways run the Worker function's code package (src/, as the stack deploys it) and
bring each sandbox to where a worker is before its first layer: the handler imported,
an S3 and an SQS client made. Then all N wait together (a file barrier) while their
memory is measured (/proc smaps_rollup: RSS summed per process counts shared pages
again in every process; PSS shares them out; private = what each has alone).

- fork server: the local Lambda runtime (fsd_inference.local.lambda_runtime), N
  concurrent invocations of one function: one init, N forks;
- one interpreter each: N ``python`` processes that each import and make the clients,
  as the runtime started sandboxes before its fork server.

Prints time until all N were ready and the memory of each way, and the ratios. The two
ways run one after the other on the same machine; other work on it slows both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fsd_inference.local.lambda_runtime import LambdaRuntime
from fsd_inference.local.stack import REPOSITORY, zip_folder
from memory import Peak, descendants, machine_used_kb, mb, rollup

PROBE = textwrap.dedent('''
    import os, pathlib, time
    import fsd_inference.handlers.worker  # what the Worker function imports
    from fsd_inference import aws
    from fsd_inference.config import AwsConfig

    def ready(event, context=None):
        config = AwsConfig(endpoint_url="http://127.0.0.1:9", region="us-east-1")
        clients = (aws.s3_client(config), aws.sqs_client(config))  # as a worker makes
        folder = pathlib.Path(event["folder"])
        (folder / str(os.getpid())).touch()
        while not (folder / "release").exists():
            time.sleep(0.05)
        return {"pid": os.getpid(), "clients": len(clients)}
''')
ALONE = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_probe; "
         "bench_probe.ready(json.loads(sys.argv[2]))")


def package() -> bytes:
    """The Worker's code package (src/) plus the probe module."""
    archive = io.BytesIO(zip_folder(REPOSITORY / "src"))
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr("bench_probe.py", PROBE)
    return archive.getvalue()


def wait_ready(folder: Path, count: int, timeout_s: float = 600) -> float:
    started = time.perf_counter()
    while len([p for p in folder.iterdir() if p.name != "release"]) < count:
        if time.perf_counter() - started > timeout_s:
            sys.exit(f"only {len(list(folder.iterdir()))} of {count} sandboxes got ready")
        time.sleep(0.05)
    return time.perf_counter() - started


def all_ready(folder: Path, count: int, started: float) -> tuple[float, Peak]:
    """Once all ``count`` are ready: seconds since ``started`` and their memory; then
    release them."""
    wait_ready(folder, count)
    seconds = time.perf_counter() - started
    peak = measure(os.getpid())
    (folder / "release").touch()
    return seconds, peak


def measure(root: int) -> Peak:
    pids = descendants(root)
    totals = rollup(pids)
    return Peak(len(pids), totals["Rss"], totals["Pss"], totals["Private"], machine_used_kb())


def forked(count: int, work: Path) -> tuple[float, Peak]:
    folder = work / "forked"
    folder.mkdir()
    code = package()
    function = SimpleNamespace(
        function_name="bench-worker", function_arn="arn:aws:lambda:us-east-1:1:function:b",
        handler="bench_probe.ready", timeout=900, memory_size=2048, region="us-east-1",
        version="$LATEST", code_sha_256="bench", environment_vars={}, code_bytes=code)
    runtime = LambdaRuntime("http://127.0.0.1:9", work / "runtime")
    started = time.perf_counter()
    threads = [threading.Thread(target=runtime.invoke, args=(function, {"folder": str(folder)}))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    result = all_ready(folder, count, started)
    for thread in threads:
        thread.join()
    runtime.close()
    return result


def alone(count: int, work: Path) -> tuple[float, Peak]:
    folder = work / "alone"
    folder.mkdir()
    code_dir = work / "code"
    with zipfile.ZipFile(io.BytesIO(package())) as bundle:
        bundle.extractall(code_dir)
    environment = {**os.environ, "PYTHONPATH": str(code_dir)}
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-c", ALONE, str(code_dir),
                                   json.dumps({"folder": str(folder)})], env=environment)
                 for _ in range(count)]
    result = all_ready(folder, count, started)
    for process in processes:
        process.wait()
    return result


def report(name: str, seconds: float, peak: Peak, count: int) -> dict[str, Any]:
    print(f"{name:>22}: {count} ready in {seconds:6.1f} s | {peak.processes} processes | "
          f"RSS {mb(peak.rss_kb)} | PSS {mb(peak.pss_kb)} ({peak.pss_kb / count / 1024:.0f} MB "
          f"per sandbox) | private {mb(peak.private_kb)} | machine in use "
          f"{mb(peak.machine_kb)}")
    return {"seconds": seconds, "processes": peak.processes, "rss_kb": peak.rss_kb,
            "pss_kb": peak.pss_kb, "private_kb": peak.private_kb,
            "machine_kb": peak.machine_kb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=62)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="fsd-bench-sandboxes-") as tmp:
        work = Path(tmp)
        fork_s, fork_peak = forked(args.sandboxes, work)
        alone_s, alone_peak = alone(args.sandboxes, work)
    results = {"fork server": report("fork server", fork_s, fork_peak, args.sandboxes),
               "one interpreter each": report("one interpreter each", alone_s, alone_peak,
                                              args.sandboxes)}
    print(f"fork server / one interpreter each: start {fork_s / alone_s:.2f}x, "
          f"PSS {fork_peak.pss_kb / alone_peak.pss_kb:.2f}x, "
          f"private {fork_peak.private_kb / alone_peak.private_kb:.2f}x")
    print(f"load average after: {os.getloadavg()}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
