"""The serverless application end to end, on the embedded local AWS.

template.yaml is deployed into a moto server (local.stack), so what runs is the real
ASL in moto's interpreter, the handlers as Lambda functions in local sandboxes
(local.lambda_runtime), SQS and S3 in moto; executions are driven by the code behind
``fsd run`` (app.driver.run_on_stack), which needs only the stack's name.

Small networks (1024 neurons x 8 layers, 3 blocks, 400 inputs) keep each execution at
a few seconds. Faults are injected through the runtime's invocation hooks, per
execution: a corrupt shard (a real, persistent worker failure) and a worker invocation
that fails once with RetryableBlockError (the block is retried from its checkpoint).
That retry waits the ASL's 150 s (IntervalSeconds is a literal, kept), so that
execution starts in the background before the first test and the other executions of
the module run while it waits; the last test collects it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsd_inference.app.driver import (
    ExecutionFailed,
    RunOptions,
    RunReport,
    StartedRun,
    finish_run,
    run_on_stack,
)
from fsd_inference.app.report import summary_lines
from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.stack import StackOutputs, stack_outputs
from fsd_inference.local.emulator import LocalCloud
from fsd_inference.local.lambda_runtime import Invocation
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.storage import S3Storage, Storage

STACK = "fsd-test"
ROWS = 400
LAYERS_PER_BLOCK = 3
RECEIVE_TIMEOUT_S = 10.0  # stragglers of a failed block give up quickly
TRANSIENT = "transient-fail-once"
Hook = Callable[[Invocation], dict[str, Any] | None]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net-1024x8.fsdm"
    save_network(generate(GeneratorParams(1024, 8, 5)), path)
    return path


@pytest.fixture(scope="module")
def expected(model: Path) -> np.ndarray:
    from fsd_inference.model.load import load_model

    network = load_model(model)
    inputs = read_input(sample_input_path(), neurons=network.neurons)[:ROWS]
    categories = infer(network, inputs).categories
    assert 0 < categories.size < ROWS, "a useful test network categorises some rows"
    return categories


@pytest.fixture(scope="module")
def storage(cloud: LocalCloud, stack: StackOutputs) -> Storage:
    return S3Storage(stack.bucket, s3_client(cloud.aws))


def options(model: Path, name: str, **overrides: Any) -> RunOptions:
    base = RunOptions(model=model, input=sample_input_path(), rows=ROWS, workers=3,
                      channel="queue", partition="random", layers_per_block=LAYERS_PER_BLOCK,
                      receive_timeout_s=RECEIVE_TIMEOUT_S, poll_s=0.25, execution_name=name)
    return replace(base, **overrides)


def leftovers(cloud: LocalCloud, storage: Storage, execution: str) -> list[str]:
    """The execution's queues and scratch objects still there (results/ are kept)."""
    prefix = stack_outputs(STACK, cloud.aws).queue_prefix  # per stack (template.yaml)
    queues = sqs_client(cloud.aws).list_queues(QueueNamePrefix=f"{prefix}-{execution}-")
    return ([*queues.get("QueueUrls", []), *storage.keys(RunLayout(execution).prefix),
             *storage.keys(scratch_prefix(execution))])


def worker_calls(execution: str, calls: list[tuple[int, int]]) -> Hook:
    """A hook that records (block, worker) of every worker invocation of ``execution``."""

    def hook(invocation: Invocation) -> None:
        event = invocation.event
        if isinstance(event, dict) and "worker" in event and \
                event.get("run", {}).get("execution") == execution:
            calls.append((event["block"], event["worker"]))

    return hook


def check_success(report: RunReport, expected: np.ndarray, workers: int) -> None:
    assert report.status == "SUCCEEDED"
    assert report.matches is True
    assert report.categories is not None
    np.testing.assert_array_equal(report.categories, expected)
    metrics = report.metrics or {}
    assert metrics["workers"] == workers and metrics["blocks"] == 3
    assert metrics["lambda"]["worker"]["invocations"] >= 3 * workers
    assert metrics["cost"]["total_usd"] > 0
    phases = report.timeline.phases()
    assert len(phases["blocks_s"]) == 3 and phases["plan_s"] > 0 and phases["gather_s"] > 0


# ----------------------------------------------------------------------------- background


@pytest.fixture(scope="module")
def transient(background_run: Any, model: Path
              ) -> Iterator[tuple[StartedRun, list[tuple[int, int]]]]:
    """An execution whose worker 1 fails once in block 1 with RetryableBlockError."""
    calls: list[tuple[int, int]] = []
    failed = threading.Event()

    def hook(invocation: Invocation) -> dict[str, Any] | None:
        event = invocation.event
        if not (isinstance(event, dict) and "worker" in event
                and event.get("run", {}).get("execution") == TRANSIENT):
            return None
        calls.append((event["block"], event["worker"]))
        if (event["block"], event["worker"]) == (1, 1) and not failed.is_set():
            failed.set()
            return {"errorType": "RetryableBlockError",
                    "errorMessage": "worker 1, block 1: injected: a connection dropped"}
        return None

    with background_run(options(model, TRANSIENT), hook) as started:
        yield started, calls


@pytest.fixture(scope="module", autouse=True)
def _transient_runs_in_the_background(transient: Any) -> None:
    """Start the 150 s-retry execution before the first test of the module."""


# ----------------------------------------------------------------------------- success


@pytest.mark.parametrize(("workers", "channel", "partition"), [
    (3, "queue", "random"), (3, "object", "hypergraph"),
    (8, "queue", "hypergraph"), (8, "object", "random")])
def test_the_state_machine_matches_the_reference(cloud: LocalCloud, storage: Storage,
                                                 model: Path, expected: np.ndarray,
                                                 workers: int, channel: str,
                                                 partition: str) -> None:
    name = f"p{workers}-{channel}-{partition}"
    calls: list[tuple[int, int]] = []
    with cloud.runtime.hooked(worker_calls(name, calls)):
        report = run_on_stack(STACK, options(model, name, workers=workers, channel=channel,
                                             partition=partition), cloud.aws)
    check_success(report, expected, workers)
    assert sorted(calls) == [(b, p) for b in range(3) for p in range(workers)]
    assert report.timeline.phases()["block_attempts"] == [1, 1, 1]
    assert leftovers(cloud, storage, name) == []
    assert storage.exists(RunLayout(name).categories), "results outlive the cleanup"


@pytest.mark.parametrize(("strategy", "workers", "extra"), [
    ("data", 3, {}),
    ("pipeline", 3, {"microbatches": 4}),
    ("hybrid", 4, {"groups": 2, "stages": 2, "microbatches": 2}),
])
@pytest.mark.parametrize("channel", ["queue", "object"])
def test_every_strategy_runs_through_the_state_machine(
        cloud: LocalCloud, storage: Storage, model: Path, expected: np.ndarray,
        strategy: str, workers: int, extra: dict[str, int], channel: str) -> None:
    name = f"{strategy}-{channel}"
    staged = "stages" in extra or strategy == "pipeline"
    report = run_on_stack(STACK, options(model, name, workers=workers, channel=channel,
                                         strategy=strategy, layers_per_block=None, **extra),
                          cloud.aws)
    assert report.status == "SUCCEEDED" and report.matches is True
    assert report.categories is not None
    np.testing.assert_array_equal(report.categories, expected)
    metrics = report.metrics or {}
    assert metrics["shape"]["strategy"] == strategy and metrics["workers"] == workers
    # stages run at the same time, so a staged run is one block; the others keep the
    # deployment's blocks (LayersPerBlock 20 > 8 layers: one block too)
    assert metrics["blocks"] == 1 and len(report.timeline.phases()["blocks_s"]) == 1
    sent = metrics["summary"]["totals"].get("messages_sent", 0)
    assert (sent > 0) == staged  # data-parallel groups never talk
    assert leftovers(cloud, storage, name) == []


def test_two_concurrent_executions_do_not_interfere(cloud: LocalCloud, storage: Storage,
                                                    model: Path, expected: np.ndarray) -> None:
    runs = {"concurrent-a": {"channel": "queue", "workers": 3},
            "concurrent-b": {"channel": "queue", "workers": 4, "partition": "hypergraph"}}
    calls: dict[str, list[tuple[int, int]]] = {name: [] for name in runs}
    with ThreadPoolExecutor(len(runs)) as pool:
        for name in runs:
            cloud.runtime.add_hook(worker_calls(name, calls[name]))
        futures = {name: pool.submit(run_on_stack, STACK, options(model, name, **kwargs),
                                     cloud.aws) for name, kwargs in runs.items()}
        reports = {name: future.result() for name, future in futures.items()}
    for name, report in reports.items():
        workers = runs[name]["workers"]
        check_success(report, expected, int(workers))
        assert sorted(calls[name]) == [(b, p) for b in range(3) for p in range(int(workers))]
        assert leftovers(cloud, storage, name) == []
    (a, b) = reports.values()
    assert a.timeline.start and b.timeline.start and a.timeline.end and b.timeline.end
    assert a.timeline.start < b.timeline.end and b.timeline.start < a.timeline.end, \
        "the two executions overlapped"


def test_a_request_without_a_strategy_runs_the_planners_choice(
        cloud: LocalCloud, storage: Storage, model: Path, expected: np.ndarray) -> None:
    """The request's strategy defaults to auto: the Plan step asks the planner (within
    the stack's WorkerMemory, at most the request's workers, both channels ranked) and
    runs what it chose, with the same categories as the reference."""
    name = "auto-default"
    report = run_on_stack(STACK, options(model, name, strategy=None, channel=None,
                                         layers_per_block=None), cloud.aws)
    assert report.status == "SUCCEEDED" and report.matches is True
    assert report.categories is not None
    np.testing.assert_array_equal(report.categories, expected)
    metrics = report.metrics or {}
    auto = metrics["auto"]
    assert auto["options"]["strategy"] == metrics["shape"]["strategy"] != "auto"
    assert auto["options"]["workers"] == metrics["workers"] <= 3
    assert auto["predicted"]["cost_usd"] > 0 and auto["predicted"]["sampled_rows"] == ROWS
    assert any(note.startswith("auto chose") for note in metrics["notes"])
    assert any(line.startswith("auto chose") for line in summary_lines(report))
    assert leftovers(cloud, storage, name) == []


def test_fsd_run_drives_a_stack_by_name_and_endpoint(cloud: LocalCloud, stack: StackOutputs,
                                                     model: Path, expected: np.ndarray,
                                                     run_fsd: Any, tmp_path: Path) -> None:
    """``fsd run --stack`` in its own process, as against AWS: only the stack's name and
    where the APIs are (credentials from the environment)."""
    done = run_fsd("run", "--stack", STACK, "--endpoint-url", cloud.aws.endpoint_url,
                   "--model", model, "--rows", ROWS, "--workers", 3, "--channel", "object",
                   "--partition", "random", "--layers-per-block", LAYERS_PER_BLOCK,
                   "--timeout", RECEIVE_TIMEOUT_S, "--out", tmp_path / "categories.txt",
                   "--metrics", tmp_path / "metrics.json")
    assert done.returncode == 0, done.stderr
    assert "SUCCEEDED" in done.stdout and "identical to the single-process reference" in \
        done.stdout
    assert f"on stack {STACK}" in done.stdout
    for label in ("phases (execution history): plan", "traffic:", "API calls",
                  "modeled AWS cost of this run: $", "planner (fsd run --strategy auto",
                  "for cost, ", "for latency, "):
        assert label in done.stdout, done.stdout
    written = np.loadtxt(tmp_path / "categories.txt", dtype=np.int64, ndmin=1)
    np.testing.assert_array_equal(written, expected)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["driver"]["reference_match"] is True
    assert len(metrics["driver"]["execution_history"]["blocks_s"]) == 3


def test_fsd_run_names_a_missing_stack(cloud: LocalCloud, run_fsd: Any,
                                       assert_clean_error: Any) -> None:
    done = run_fsd("run", "--stack", "no-such-stack", "--endpoint-url", cloud.aws.endpoint_url)
    assert_clean_error(done, "no-such-stack")


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("channel", "victim"), [("queue", 1), ("object", 2)])
def test_a_persistent_worker_failure_fails_cleanly(cloud: LocalCloud, storage: Storage,
                                                   model: Path, channel: str,
                                                   victim: int) -> None:
    """A worker's shard is corrupt: no retry cures that. The execution fails with the
    worker's error as a readable cause, and nothing of it is left behind, not even what
    the other workers wrote after the failure path had cleaned up (they stop and tidy)."""
    name = f"persistent-failure-{channel}"

    def corrupt_shard(invocation: Invocation) -> None:
        event = invocation.event
        if isinstance(event, dict) and event.get("worker") == victim and \
                event.get("run", {}).get("execution") == name:
            storage.put_bytes(RunLayout(name).shard(victim), b"not an fsdm bundle")

    with cloud.runtime.hooked(corrupt_shard), pytest.raises(ExecutionFailed) as failure:
        run_on_stack(STACK, options(model, name, workers=3, channel=channel), cloud.aws)
    report = failure.value.report
    assert report.status == "FAILED"
    assert report.error == "InputFormatError"
    assert report.cause is not None
    assert report.cause.startswith("InputFormatError: ")
    assert f"shard-{victim}.fsdm: not a readable" in report.cause
    assert "its queues and scratch were cleaned up" in report.cause
    assert "errorMessage" not in report.cause, "the cause is text, not the Lambda JSON"
    assert report.timeline.tasks["CleanupAfterFailure"].end is not None
    assert cloud.runtime.wait_idle(RECEIVE_TIMEOUT_S + 60), "the other workers gave up"
    assert leftovers(cloud, storage, name) == []


def test_a_transient_failure_is_retried_from_the_block_checkpoint(
        cloud: LocalCloud, storage: Storage, expected: np.ndarray,
        transient: tuple[StartedRun, list[tuple[int, int]]]) -> None:
    started, calls = transient
    report = finish_run(started)
    check_success(report, expected, 3)
    assert report.timeline.phases()["block_attempts"] == [1, 2, 1], "block 1 ran twice"
    assert sorted(calls) == sorted([(0, p) for p in range(3)] + [(1, p) for p in range(3)] * 2
                                   + [(2, p) for p in range(3)]), "blocks 0 and 2 ran once"
    assert cloud.runtime.wait_idle(RECEIVE_TIMEOUT_S + 60)
    assert leftovers(cloud, storage, TRANSIENT) == []
