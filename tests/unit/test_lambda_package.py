"""The Lambda packages leave out parts of scipy and zstandard (src/Makefile); nothing
the handlers import may be among them.

A fresh interpreter imports every handler and the modules their steps load on demand
(the partitioners, the channels and the codec, the planner), and the scipy subpackages and zstandard
backends it ends up with are checked against what src/Makefile keeps. (Code that imports
scipy inside a function body is caught by ``bench/lambda_packages.py --smoke``, which
runs the handlers from packages built that way.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "src" / "Makefile"
PROBE = """
import json, sys
import fsd_inference.handlers.plan, fsd_inference.handlers.worker
import fsd_inference.handlers.gather, fsd_inference.handlers.cleanup
import fsd_inference.partition.hypergraph, fsd_inference.partition.simple
import fsd_inference.channels.sqs, fsd_inference.channels.s3, fsd_inference.channels.codec
import fsd_inference.cloud.plan_step, fsd_inference.cloud.worker_step
import fsd_inference.cloud.gather_step, fsd_inference.cloud.cleanup_step
import fsd_inference.cloud.auto_plan  # the Plan step imports it for strategy auto
print(json.dumps(sorted(sys.modules)))
"""


def make_variable(name: str) -> list[str]:
    match = re.search(rf"^{name}\s*:=\s*(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"{name} is not set in {MAKEFILE}"
    return match.group(1).split()


def imported_modules() -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True, timeout=120)
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_the_handlers_import_no_pruned_part() -> None:
    keep = set(make_variable("SCIPY_KEEP"))
    unused = make_variable("ZSTD_UNUSED")
    modules = imported_modules()
    scipy_root = Path(__import__("scipy").__file__).parent
    subpackages = {m.split(".")[1] for m in modules if m.startswith("scipy.")}
    pruned = {name for name in subpackages if (scipy_root / name).is_dir()} - keep
    assert not pruned, f"handlers import scipy subpackages src/Makefile removes: {pruned}"
    assert "scipy.sparse" in modules  # the probe is real: it did load what is kept
    zstd = {m.split(".")[1] for m in modules if m.startswith("zstandard.")}
    assert "backend_c" in zstd
    for pattern in unused:
        stem = pattern.split(".")[0]
        assert stem not in zstd, f"zstandard.{stem} is imported but removed from packages"
