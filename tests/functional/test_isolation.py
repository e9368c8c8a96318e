"""Isolation between executions and cleanup that cannot lose track, through the real ASL.

template.yaml deployed into the embedded moto (as tests/functional/test_app.py does):
- finding 1: an execution whose input smuggles a ``run`` naming another execution fails
  in Plan, its failure cleanup runs, and the other execution's queues and scratch are
  untouched while it runs; it then succeeds;
- finding 2: an execution stopped mid-block never reaches its Cleanup state; its queues
  and scratch stay until the sweeper (``fsd cleanup``, a real process) removes them,
  and the sweeper leaves a running execution alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsd_inference.app.driver import RunOptions, finish_run, run_on_stack, start_run
from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.local.emulator import LocalCloud, local_serverless
from fsd_inference.local.lambda_runtime import Invocation
from fsd_inference.local.stack import deploy_stack
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.load import load_model
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.storage import S3Storage, Storage

STACK = "fsd-isolation"
ROWS = 200


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    with local_serverless() as local:
        yield local


@pytest.fixture(scope="module")
def stack(cloud: LocalCloud) -> StackOutputs:
    return deploy_stack(STACK, cloud.aws).outputs


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net-1024x6.fsdm"
    save_network(generate(GeneratorParams(1024, 6, 7)), path)
    return path


@pytest.fixture(scope="module")
def storage(cloud: LocalCloud, stack: StackOutputs) -> Storage:
    return S3Storage(stack.bucket, s3_client(cloud.aws))


def options(model: Path, name: str, **overrides: Any) -> RunOptions:
    base = RunOptions(model=model, input=sample_input_path(), rows=ROWS, workers=3,
                      channel="queue", partition="random", layers_per_block=2,
                      receive_timeout_s=60.0, poll_s=0.25, execution_name=name)
    return replace(base, **overrides)


def resources(cloud: LocalCloud, stack: StackOutputs, storage: Storage,
              execution: str) -> set[str]:
    """The execution's queues and scratch / run objects (results/ are kept anyway)."""
    queues = sqs_client(cloud.aws).list_queues(
        QueueNamePrefix=f"{stack.queue_prefix}-{execution}-").get("QueueUrls", [])
    return {*queues, *storage.keys(RunLayout(execution).prefix),
            *storage.keys(scratch_prefix(execution))}


def first_worker_of(execution: str, action: Any) -> Any:
    """A hook that runs ``action()`` once, when ``execution``'s first worker starts (its
    queues and shards exist then), before letting the invocation run."""
    fired = threading.Event()

    def hook(invocation: Invocation) -> None:
        event = invocation.event
        if isinstance(event, dict) and "worker" in event and not fired.is_set() and \
                event.get("run", {}).get("execution") == execution:
            fired.set()
            action()

    return hook, fired


def test_a_crafted_request_cannot_touch_another_execution(
        cloud: LocalCloud, stack: StackOutputs, storage: Storage, model: Path) -> None:
    victim, attacker = "isolation-victim", "isolation-attacker"
    seen: dict[str, Any] = {}

    def attack() -> None:
        seen["before"] = resources(cloud, stack, storage, victim)
        crafted = options(model, attacker).request("models/x.fsdm", "inputs/x.tsv")
        crafted["run"] = {"execution": victim, "workers": 10**6, "channel": "queue",
                          "bucket": stack.bucket, "message_limit": 1 << 20}
        sfn = stepfunctions_client(cloud.aws)
        arn = sfn.start_execution(stateMachineArn=stack.state_machine_arn, name=attacker,
                                  input=json.dumps(crafted))["executionArn"]
        deadline = time.monotonic() + 60
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the crafted execution did not end"
            time.sleep(0.2)
        seen["attacker"] = sfn.describe_execution(executionArn=arn)
        seen["after"] = resources(cloud, stack, storage, victim)

    hook, fired = first_worker_of(victim, attack)
    with cloud.runtime.hooked(hook):
        report = run_on_stack(STACK, options(model, victim), cloud.aws)
    assert fired.is_set()
    failed = seen["attacker"]
    assert failed["status"] == "FAILED"
    assert failed["error"] == "RequestError"
    assert "request field 'run': Object contains unknown field `run`" in failed["cause"]
    queues = {r for r in seen["before"] if r.startswith("http")}
    assert len(queues) == 3 and any("/shard-" in r for r in seen["before"])
    assert seen["before"] <= seen["after"], "nothing of the victim was deleted"
    assert report.status == "SUCCEEDED" and report.matches is True
    assert resources(cloud, stack, storage, victim) == set()


def test_a_stopped_execution_is_swept_and_a_running_one_left_alone(
        cloud: LocalCloud, stack: StackOutputs, storage: Storage, model: Path,
        run_fsd: Any) -> None:
    stopped, running = "sweep-stopped", "sweep-running"
    sfn = stepfunctions_client(cloud.aws)
    started: dict[str, Any] = {}
    hook, fired = first_worker_of(stopped, lambda: None)
    with cloud.runtime.hooked(hook):
        started["stopped"] = start_run(STACK, options(model, stopped), cloud.aws)
        assert fired.wait(60), "the execution reached its workers"
    arn = started["stopped"].execution_arn
    sfn.stop_execution(executionArn=arn)
    deadline = time.monotonic() + 90
    while (status := sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not stop"
        time.sleep(0.25)
    assert cloud.runtime.wait_idle(90), "the stopped execution's workers gave up"
    # moto's interpreter reports a stopped execution as FAILED (AWS: ABORTED); either way
    # it stopped where it was, without its Cleanup state
    assert status in ("ABORTED", "FAILED")
    left = resources(cloud, stack, storage, stopped)
    assert any(r.startswith("http") for r in left) and storage.exists(
        RunLayout(stopped).manifest), "a stop skips the Cleanup state: leftovers exist"

    gate = threading.Event()
    hook2, fired2 = first_worker_of(running, lambda: gate.wait(60))
    with cloud.runtime.hooked(hook2):
        started["running"] = start_run(STACK, options(model, running), cloud.aws)
        assert fired2.wait(60)
        dry = run_fsd("cleanup", "--stack", STACK, "--endpoint-url", cloud.aws.endpoint_url,
                      "--older-than", "0s", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert resources(cloud, stack, storage, stopped) == left, "a dry run deletes nothing"
        done = run_fsd("cleanup", "--stack", STACK, "--endpoint-url", cloud.aws.endpoint_url,
                       "--older-than", "0s")
        still = resources(cloud, stack, storage, running)
        gate.set()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{stopped}: {status}" in done.stdout and "cleaned up" in done.stdout
    assert f"{running}: RUNNING" in done.stdout and "left alone" in done.stdout
    assert resources(cloud, stack, storage, stopped) == set()
    assert any(r.startswith("http") for r in still), "the running one kept its queues"
    report = finish_run(started["running"])
    assert report.status == "SUCCEEDED" and report.matches is True
    categories = infer(load_model(model), read_input(sample_input_path(), neurons=1024)[:ROWS])
    np.testing.assert_array_equal(report.categories, categories.categories)
