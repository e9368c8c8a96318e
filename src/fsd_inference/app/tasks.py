"""The OS processes that stand in for Lambda invocations in ``fsd infer``.

Each task runs in a process of its own (P tasks compute in parallel on the machine's
cores), started from a fork server rather than spawned: a spawned process is a fresh
interpreter that imports numpy, scipy, boto3 and the package before it can start
(measured 1.6 s of CPU per task, 5 to 7 s of wall time on the shared 2-core machine),
while the fork server imports them once, in parallel with the Plan step, and each task
is then a fork of it. Forking the fork server, not the parent, is what keeps this safe
in a parent that runs threads (the embedded AWS server, a kernel pool, a progress bar).

What a spawned child would have taken from its parent at start, a child of the fork
server takes explicitly: the parent's environment and working directory are sent with
each task (the server was started earlier, perhaps before a test changed either).
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any

from fsd_inference.channels import Transport
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.cloud.worker_step import worker_step
from fsd_inference.exceptions import FsdError
from fsd_inference.kernel import get_kernel
from fsd_inference.storage import FolderStorage

NO_DEADLINE_S = 1e9  # no Lambda timeout on this machine
# What every task needs, imported once by the fork server (this module imports the worker
# step, the channels, the kernel and the storage).
PRELOAD = [__name__]


TaskContext = ForkServerContext | SpawnContext


def task_context() -> TaskContext:
    """The context task processes are started from; starts its fork server now (it
    imports :data:`PRELOAD` while the caller goes on with the Plan step)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # not on this OS
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return context


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task's process needs, picklable."""

    run: dict[str, Any]
    block: int
    task: int
    folder: str
    transport: Transport
    settings: CloudSettings
    kernel: str | None
    threads: int | None
    environment: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, run: RunInfo, block: int, task: int, folder: str, transport: Transport,
           settings: CloudSettings, kernel: str | None, threads: int | None) -> TaskSpec:
        return cls(run.to_dict(), block, task, folder, transport, settings, kernel, threads,
                   dict(os.environ), os.getcwd())


def task_main(spec: TaskSpec, results: Any) -> None:
    """One task's process: worker_step over the folder, news on the results queue."""
    task = spec.task
    try:
        os.environ.clear()
        os.environ.update(spec.environment)
        os.chdir(spec.cwd)
        run = RunInfo.from_dict(spec.run)
        kernel = get_kernel(spec.kernel, spec.threads, share=run.workers)
        summary = worker_step(run, spec.block, task, NO_DEADLINE_S, spec.settings,
                              FolderStorage(spec.folder), spec.transport,
                              on_step=lambda k, m: results.put(("step", task, (k, m))),
                              kernel=kernel)
        results.put(("done", task, summary))
    except FsdError as exc:
        results.put(("error", task, str(exc)))
    except Exception:  # a bug: keep the whole traceback for the report
        results.put(("error", task, traceback.format_exc()))
