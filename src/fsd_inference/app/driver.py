"""Drive one execution of the deployed application, on AWS or the embedded local AWS.

:func:`run_on_stack` needs only a stack name (and where AWS is): the stack's outputs
name the bucket and the state machine. It uploads the model (as a ``.fsdm`` bundle
keyed by its fingerprint) and the input (keyed by its content hash) unless the bucket
has them already, starts an execution, follows its history for the progress line,
downloads the categories and metrics the Gather step wrote, and checks the categories
against the single-process reference (cached by model, input, rows and dtype).

:func:`run_local` starts the embedded AWS (fsd_inference.local), deploys template.yaml
into it, warms the functions' sandboxes, and then runs exactly the same code.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.app.follow import POLL_S, STALL_S, failed_items, follow
from fsd_inference.app.progress import ProgressLine
from fsd_inference.cloud.layout import plan_key
from fsd_inference.cloud.stack import StackOutputs, stack_outputs, stepfunctions_client
from fsd_inference.cloud.timeline import Timeline
from fsd_inference.config import AwsConfig, cache_dir
from fsd_inference.constants import DEFAULT_DTYPE
from fsd_inference.exceptions import FsdError
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_categories, read_input, write_categories
from fsd_inference.partition.cache import ownership
from fsd_inference.storage import Storage, storage_for
from fsd_inference.strategy import AUTO

LOCAL_STACK = "fsd-local"
THRESHOLD_ERROR = "States.ExceedToleratedFailureThreshold"
Say = Callable[[str], None]


class ExecutionFailed(FsdError):
    """The execution ended other than SUCCEEDED; carries its error and cause."""

    def __init__(self, report: RunReport) -> None:
        self.report = report
        error, cause = report.error or "no error name", report.cause or "no cause"
        text = cause if cause.startswith(f"{error}:") else f"{error}: {cause}"
        items = f"; failed: {'; '.join(report.item_failures)}" if report.item_failures else ""
        super().__init__(f"execution {report.execution_name} {report.status.lower()}: "
                         f"{text}{items}")


@dataclass(frozen=True)
class RunOptions:
    """One ``fsd run``: what to run (None: the demo's defaults, chosen by the CLI)."""

    model: Path
    input: Path
    workers: int = 8
    channel: str | None = "queue"  # None: the deployment's (auto: the planner's choice)
    partition: str = "hypergraph"
    seed: int = 0
    dtype: str = DEFAULT_DTYPE
    layers_per_block: int | None = None
    message_limit: int | None = None
    receive_timeout_s: float | None = None
    rows: int | None = None
    bias: float | None = None
    poll_s: float = POLL_S
    stall_s: float = STALL_S  # give up following after this long without progress
    execution_name: str | None = None
    strategy: str | None = "neuron"  # None: the request's default (auto)
    stages: int | None = None
    groups: int | None = None
    microbatches: int | None = None
    objective: str | None = None  # strategy auto only; None: the request's default (cost)

    def request(self, model_key: str, input_key: str) -> dict[str, Any]:
        """The execution's input (cloud/plan_step.py's request); None fields left out."""
        request: dict[str, Any] = {
            "model": model_key, "input": input_key, "workers": self.workers,
            "channel": self.channel, "partition": self.partition, "seed": self.seed,
            "dtype": self.dtype, "layers_per_block": self.layers_per_block,
            "message_limit": self.message_limit, "receive_timeout_s": self.receive_timeout_s,
            "rows": self.rows, "strategy": self.strategy, "stages": self.stages,
            "groups": self.groups, "microbatches": self.microbatches,
            "objective": self.objective,
        }
        return {k: v for k, v in request.items() if v is not None}


@dataclass
class RunReport:
    stack: StackOutputs
    execution_name: str
    execution_arn: str
    status: str
    timeline: Timeline
    request: dict[str, Any]
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    categories: np.ndarray | None = None
    reference: np.ndarray | None = None
    metrics: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # driver-side: upload, ...
    item_failures: list[str] = field(default_factory=list)  # a Distributed Map's children

    @property
    def matches(self) -> bool | None:
        if self.categories is None or self.reference is None:
            return None
        return bool(np.array_equal(self.categories, self.reference))

    def metrics_document(self) -> dict[str, Any]:
        """The run's metrics (from S3) plus what only the driver saw."""
        return {**(self.metrics or {}), "driver": {
            "stack": self.stack.stack_name, "execution_arn": self.execution_arn,
            "status": self.status, "request": self.request,
            "execution_history": self.timeline.phases(), "driver_s": self.seconds,
            "reference_match": self.matches}}


# ----------------------------------------------------------------------------- inputs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_model(storage: Storage, network: Network, path: Path, bias: float | None) -> str:
    """``models/{fingerprint}.fsdm`` in the bucket (uploaded once per model and bias)."""
    key = f"models/{network.fingerprint()}{SUFFIX}"
    if storage.exists(key):
        return key
    if path.is_file() and path.suffix == SUFFIX and bias is None:
        storage.put_file(key, path)
        return key
    with tempfile.TemporaryDirectory(prefix="fsd-model-") as tmp:
        bundle = Path(tmp) / f"model{SUFFIX}"
        save_network(network, bundle)
        storage.put_file(key, bundle)
    return key


def upload_input(storage: Storage, path: Path) -> str:
    """``inputs/{sha256[:16]}/{name}`` in the bucket (uploaded once per content)."""
    key = f"inputs/{_sha256(path)[:16]}/{path.name}"
    if not storage.exists(key):
        storage.put_file(key, path)
    return key


def upload_partition(storage: Storage, network: Network, options: RunOptions) -> None:
    """Seed the bucket's ``plans/`` cache with this machine's partition (computed once and
    kept under the cache directory), so the Plan step downloads it instead of running the
    partitioner again in every fresh emulator (~15 s for the demo's hypergraph). Only the
    neuron strategy partitions the whole network into ``workers`` parts; other shapes
    partition their stages' layers (or nothing) and are left to the Plan step."""
    if options.strategy != "neuron" or options.workers == 1:
        return
    local = ownership(network, options.partition, options.workers, options.seed)
    key = plan_key(local.path.name)
    if not storage.exists(key):
        storage.put_file(key, local.path)


def reference_categories(network: Network, input_path: Path, rows: int | None,
                         dtype: str) -> np.ndarray:
    """The single-process reference's categories, cached under the cache directory."""
    name = f"{network.fingerprint()}-{_sha256(input_path)[:16]}-{rows or 'all'}-{dtype}.txt"
    path = cache_dir() / "reference" / name
    if path.is_file():
        return read_categories(path)
    inputs = read_input(input_path, neurons=network.neurons, dtype=dtype)
    if rows is not None:
        inputs = sp.csr_matrix(inputs[:rows])
    categories = infer(network, inputs, dtype).categories
    path.parent.mkdir(parents=True, exist_ok=True)
    write_categories(categories, path)
    return categories


# ----------------------------------------------------------------------------- the execution


def execution_name() -> str:
    """``fsd-YYYYmmdd-HHMMSS-xxxxxx``: sortable, unique, a valid run id as it is."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"fsd-{stamp}-{uuid.uuid4().hex[:6]}"


def _results(storage: Storage, output: dict[str, Any], directory: Path
             ) -> tuple[np.ndarray, dict[str, Any]]:
    def key(uri: str) -> str:
        return uri.split("/", 3)[3]

    path = storage.get_file(key(output["categories_uri"]), directory / "categories.txt")
    metrics = storage.get_json(key(output["metrics_uri"]))
    return read_categories(path), metrics


@dataclass
class StartedRun:
    """An execution started by start_run, for finish_run to follow and collect."""

    stack: StackOutputs
    options: RunOptions
    aws: AwsConfig
    network: Network
    storage: Storage
    request: dict[str, Any]
    execution_name: str
    execution_arn: str
    timings: dict[str, float]


def start_run(stack_name: str, options: RunOptions, aws: AwsConfig,
              say: Say | None = None) -> StartedRun:
    """Upload what the bucket lacks and start the execution (returns at once)."""
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    stack = stack_outputs(stack_name, aws)
    storage = storage_for(stack.bucket, aws)
    network = load_model(options.model, bias=options.bias)
    model_key = upload_model(storage, network, options.model, options.bias)
    input_key = upload_input(storage, options.input)
    upload_partition(storage, network, options)
    timings["upload_s"] = time.perf_counter() - tick
    request = options.request(model_key, input_key)
    name = options.execution_name or execution_name()
    execution_arn = stepfunctions_client(aws).start_execution(
        stateMachineArn=stack.state_machine_arn, name=name,
        input=json.dumps(request))["executionArn"]
    if say is not None:
        how = (f"{options.workers} workers, {options.channel} channel, {options.partition} "
               f"partition" if options.strategy not in (None, AUTO) else
               f"the planner chooses (auto), at most {options.workers} workers")
        say(f"execution {name} started on stack {stack_name}: {how}\n")
    return StartedRun(stack, options, aws, network, storage, request, name, execution_arn,
                      timings)


def finish_run(started: StartedRun, say: Say | None = None, live: bool = False) -> RunReport:
    """Follow the execution to its end, then collect and check its results; raises
    ExecutionFailed if it did not succeed."""
    options, timings = started.options, started.timings
    tick = time.perf_counter()
    sfn = stepfunctions_client(started.aws)
    description, timeline = follow(sfn, started.execution_arn, options.poll_s,
                                   ProgressLine(say, live), options.stall_s)
    timings["execution_s"] = time.perf_counter() - tick
    report = RunReport(started.stack, started.execution_name, started.execution_arn,
                       description["status"], timeline, started.request,
                       error=description.get("error"), cause=description.get("cause"),
                       seconds=timings)
    if report.status != "SUCCEEDED":
        if report.error == THRESHOLD_ERROR:  # a Distributed Map block: name the worker
            report.item_failures = failed_items(sfn, started.execution_arn)
        raise ExecutionFailed(report)
    report.output = json.loads(description.get("output") or "{}")
    with tempfile.TemporaryDirectory(prefix="fsd-results-") as tmp:
        report.categories, report.metrics = _results(started.storage, report.output, Path(tmp))
    tick = time.perf_counter()
    report.reference = reference_categories(started.network, options.input, options.rows,
                                            options.dtype)
    timings["reference_s"] = time.perf_counter() - tick
    return report


def run_on_stack(stack_name: str, options: RunOptions, aws: AwsConfig,
                 say: Say | None = None, live: bool = False) -> RunReport:
    """One execution on a deployed stack; raises ExecutionFailed if it did not succeed."""
    return finish_run(start_run(stack_name, options, aws, say), say, live)


def run_local(options: RunOptions, say: Say | None = None, live: bool = False,
              stack_name: str = LOCAL_STACK) -> RunReport:
    """Start the embedded AWS, deploy template.yaml into it, and run_on_stack there."""
    from fsd_inference.local.emulator import local_serverless
    from fsd_inference.local.stack import deploy_stack

    started = time.perf_counter()
    with local_serverless() as cloud:
        deployed = deploy_stack(stack_name, cloud.aws)
        cloud.prewarm(deployed.outputs)
        if say is not None:
            say(f"embedded AWS at {cloud.aws.endpoint_url}: stack {stack_name} deployed from "
                f"template.yaml in {deployed.seconds:.1f} s\n")
        try:
            report = run_on_stack(stack_name, options, cloud.aws, say, live)
        except ExecutionFailed as exc:
            exc.report.seconds["deploy_s"] = deployed.seconds
            raise
        report.seconds["deploy_s"] = deployed.seconds
    report.seconds["total_s"] = time.perf_counter() - started
    return report
