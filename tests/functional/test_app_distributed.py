"""More than 40 workers: the state machine's Distributed Map branch, end to end, locally.

template.yaml deployed into the embedded AWS (as in test_app.py), 42 workers: the Plan
picks ``map: distributed`` above 40, so every block is a DistributedBlock whose items run
as child executions (local.distributed_map), with the ASL's own Retry and Catch.

A persistent worker failure (a corrupt shard) fails each Map Run with
States.ExceedToleratedFailureThreshold, which the ASL retries twice at its literal
150 s interval before the Catch routes to the failure cleanup: about 5 minutes, nearly
all of it waiting. That execution starts in the background before the first test and
the last test collects it, so the successful 42-worker run overlaps the wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsd_inference.app.driver import (
    ExecutionFailed,
    RunOptions,
    StartedRun,
    finish_run,
    run_on_stack,
    start_run,
)
from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.cloud.storage import Storage
from fsd_inference.cloud.timeline import execution_history
from fsd_inference.local.emulator import LocalCloud, local_serverless
from fsd_inference.local.lambda_runtime import Invocation
from fsd_inference.local.stack import deploy_stack
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.load import load_model
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input

STACK = "fsd-many"
WORKERS = 42  # one above what an inline Map may run at once (40)
ROWS = 200
RECEIVE_TIMEOUT_S = 60.0  # 42 workers on the emulator: a layer takes tens of seconds
FAILING = "distributed-persistent-failure"
VICTIM = 7


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    with local_serverless() as local:
        yield local


@pytest.fixture(scope="module")
def stack(cloud: LocalCloud) -> StackOutputs:
    return deploy_stack(STACK, cloud.aws).outputs


@pytest.fixture(scope="module")
def storage(cloud: LocalCloud, stack: StackOutputs) -> Storage:
    return Storage(stack.bucket, s3_client(cloud.aws))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net-1024x2.fsdm"
    save_network(generate(GeneratorParams(1024, 2, 5)), path)
    return path


def options(model: Path, name: str) -> RunOptions:
    return RunOptions(model=model, input=sample_input_path(), rows=ROWS, workers=WORKERS,
                      channel="queue", partition="hypergraph", layers_per_block=1,
                      receive_timeout_s=RECEIVE_TIMEOUT_S, poll_s=0.5, execution_name=name)


def leftovers(cloud: LocalCloud, storage: Storage, execution: str) -> list[str]:
    queues = sqs_client(cloud.aws).list_queues(QueueNamePrefix=f"fsd-{execution}-")
    return ([*queues.get("QueueUrls", []), *storage.keys(RunLayout(execution).prefix),
             *storage.keys(scratch_prefix(execution))])


@pytest.fixture(scope="module")
def failing(cloud: LocalCloud, stack: StackOutputs, storage: Storage, model: Path
            ) -> Iterator[tuple[StartedRun, list[int]]]:
    """An execution whose worker VICTIM finds its shard corrupt in every attempt."""
    attempts: list[int] = []
    lock = threading.Lock()

    def corrupt_shard(invocation: Invocation) -> None:
        event = invocation.event
        if isinstance(event, dict) and event.get("worker") == VICTIM and \
                event.get("run", {}).get("execution") == FAILING:
            with lock:
                attempts.append(event["block"])
            storage.put_bytes(RunLayout(FAILING).shard(VICTIM), b"not an fsdm bundle")

    cloud.runtime.add_hook(corrupt_shard)
    started = start_run(STACK, options(model, FAILING), cloud.aws)
    yield started, attempts
    cloud.runtime.remove_hook(corrupt_shard)
    sfn = stepfunctions_client(cloud.aws)
    if sfn.describe_execution(executionArn=started.execution_arn)["status"] == "RUNNING":
        sfn.stop_execution(executionArn=started.execution_arn)  # only part of the module ran


@pytest.fixture(scope="module", autouse=True)
def _the_failure_runs_in_the_background(failing: Any) -> None:
    """Start the 5-minute execution before the first test of the module."""


def test_42_workers_run_through_the_distributed_map(cloud: LocalCloud, storage: Storage,
                                                    model: Path) -> None:
    name = "distributed-42"
    calls: list[tuple[int, int]] = []

    def record(invocation: Invocation) -> None:
        event = invocation.event
        if isinstance(event, dict) and event.get("run", {}).get("execution") == name and \
                "worker" in event:
            calls.append((event["block"], event["worker"]))

    with cloud.runtime.hooked(record):
        report = run_on_stack(STACK, options(model, name), cloud.aws)
    network = load_model(model)
    inputs = read_input(sample_input_path(), neurons=network.neurons)[:ROWS]
    expected = infer(network, inputs).categories
    assert 0 < expected.size < ROWS
    assert report.status == "SUCCEEDED" and report.categories is not None
    np.testing.assert_array_equal(report.categories, expected)
    metrics = report.metrics or {}
    assert metrics["map"] == "distributed" and metrics["workers"] == WORKERS
    assert sorted(calls) == [(b, p) for b in range(2) for p in range(WORKERS)]
    kinds = [e["type"] for e in execution_history(stepfunctions_client(cloud.aws),
                                                  report.execution_arn)]
    assert kinds.count("MapRunStarted") == kinds.count("MapRunSucceeded") == 2
    assert not any(k.startswith("MapIteration") for k in kinds), \
        "no inline iterations: the Distributed Map ran the blocks"
    assert report.timeline.phases()["block_attempts"] == [1, 1]
    assert leftovers(cloud, storage, name) == []


def test_a_failing_item_is_retried_then_caught_and_cleaned_up(
        cloud: LocalCloud, storage: Storage,
        failing: tuple[StartedRun, list[int]]) -> None:
    started, attempts = failing
    with pytest.raises(ExecutionFailed) as failure:
        finish_run(started)
    report = failure.value.report
    assert report.status == "FAILED"
    assert report.error == "States.ExceedToleratedFailureThreshold"
    assert report.cause is not None and report.cause.startswith(
        "States.ExceedToleratedFailureThreshold: The specified tolerated failure threshold "
        "was exceeded")
    assert "its queues and scratch were cleaned up" in report.cause
    assert attempts == [0, 0, 0], "block 0 ran three times (two retries), then was caught"
    assert report.timeline.phases()["block_attempts"] == [3]
    assert report.timeline.tasks["CleanupAfterFailure"].end is not None
    (item,) = report.item_failures
    assert item.startswith(f"worker {VICTIM}: InputFormatError: ") and \
        f"shard-{VICTIM}.fsdm: not a readable" in item, item
    assert f"worker {VICTIM}: InputFormatError" in str(failure.value)
    assert cloud.runtime.wait_idle(RECEIVE_TIMEOUT_S + 60), "the other workers gave up"
    assert leftovers(cloud, storage, FAILING) == []
