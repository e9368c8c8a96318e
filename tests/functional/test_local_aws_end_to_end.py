"""The local AWS as users drive it: ``fsd emulator`` with events/, and 42 workers.

Two families of end-to-end tests share this module because each has an execution that
mostly waits, and here the waits overlap with everything else:

- ``fsd emulator --demo`` in its own process (tests/functional/emulator_process.py):
  a boto3 client with nothing but the printed exports runs the README's request on a
  small network; every file in events/ is exercised against it the way the README
  shows (Step Functions requests through StartExecution, function events through
  Lambda's Invoke, what ``aws lambda invoke`` and ``sam remote invoke`` call, the worker
  event as the block it is the template of). The demo request itself (1024 x 120) runs
  in the background until its first block is done, then is stopped and cleaned up.
- ``fsd run``'s driver with 42 workers on the embedded AWS in this process (template.yaml
  deployed; the Plan picks the Distributed Map above 40), which must match the
  reference; a worker that fails once (injected by a runtime hook) fails its Map Run
  with States.ExceedToleratedFailureThreshold, which the ASL retries after its literal
  150 s interval from the block's checkpoint: that execution starts in the background
  before the first test. A persistent worker failure (a corrupt shard) is retried twice
  (300 s) before the Catch routes it to the failure cleanup: that test is marked slow
  (``.venv/bin/pytest -m slow``), since it alone would add five minutes to make test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulator_process import EXECUTION_TIMEOUT_S, Emulator, processes_using, started_emulator

from fsd_inference.app.demo import EVENTS_EXECUTION, SMALL, cached_network
from fsd_inference.app.driver import (
    ExecutionFailed,
    RunOptions,
    StartedRun,
    finish_run,
    run_on_stack,
)
from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.cloud.timeline import execution_history
from fsd_inference.constants import EMULATOR_STACK
from fsd_inference.local.emulator import LocalCloud
from fsd_inference.local.lambda_runtime import Invocation
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.load import load_model
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.storage import S3Storage, Storage

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
README = ROOT / "README.md"
CLIENT = """
import json, sys, time, boto3
request = json.loads(sys.argv[1])
bucket, machine = sys.argv[2], sys.argv[3]
s3, sfn = boto3.client("s3"), boto3.client("stepfunctions")
s3.upload_file(sys.argv[4], bucket, request["model"])
s3.upload_file(sys.argv[5], bucket, request["input"])
arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps(request))["executionArn"]
while (done := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
    time.sleep(1)
output = json.loads(done.get("output") or "{}")
key = output.get("categories_uri", "s3:///").split("/", 3)[3]
categories = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() if key else ""
print(json.dumps({"status": done["status"], "categories": categories}))
"""
STACK = "fsd-many"
WORKERS = 42  # one above what an inline Map may run at once (40)
ROWS = 200
RECEIVE_TIMEOUT_S = 60.0  # 42 workers on the emulator: a layer takes tens of seconds
FAILING = "distributed-persistent-failure"
FLAKY = "distributed-transient-failure"
VICTIM = 7


def event(name: str) -> Any:
    return json.loads((EVENTS / f"{name}.json").read_text())


def reference(model: Path, rows: int | None) -> np.ndarray:
    network = load_model(model)
    inputs = read_input(sample_input_path(), neurons=network.neurons)
    return infer(network, inputs[:rows] if rows else inputs).categories


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def storage(cloud: LocalCloud, stack: StackOutputs) -> Storage:
    return S3Storage(stack.bucket, s3_client(cloud.aws))


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
def failing_once(background_run: Any, model: Path
                 ) -> Iterator[tuple[StartedRun, list[tuple[int, int]]]]:
    """An execution whose worker VICTIM fails once, in block 0, with a transient error."""
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def fail_once(invocation: Invocation) -> dict[str, Any] | None:
        event = invocation.event
        if not (isinstance(event, dict) and "worker" in event and
                event.get("run", {}).get("execution") == FLAKY):
            return None
        with lock:
            calls.append((event["block"], event["worker"]))
            first = calls.count((0, VICTIM)) == 1 and (event["block"], event["worker"]) == \
                (0, VICTIM)
        if first:
            return {"errorType": "RetryableBlockError",
                    "errorMessage": f"worker {VICTIM}, block 0: injected: a connection dropped"}
        return None

    with background_run(options(model, FLAKY), fail_once) as started:
        yield started, calls


@pytest.fixture(scope="module")
def failing(background_run: Any, storage: Storage, model: Path
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

    with background_run(options(model, FAILING), corrupt_shard) as started:
        yield started, attempts


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with started_emulator(tmp_path_factory.mktemp("emulator"),
                          tmp_path_factory.mktemp("cache")) as handle:
        yield handle


def first_block_then_stop(emulator: Emulator, request: dict[str, Any]) -> dict[str, Any]:
    """Run ``request`` until its first block of workers is done, then stop it and clean
    up after it (StopExecution, then the Cleanup function, as fsd run does when asked)."""
    sfn = emulator.client("stepfunctions")
    arn = emulator.start(request)
    deadline = time.monotonic() + EXECUTION_TIMEOUT_S
    kinds: list[str] = []
    while "MapStateExited" not in kinds and time.monotonic() < deadline:
        time.sleep(1)
        kinds = [e["type"] for e in execution_history(sfn, arn)]
    sfn.stop_execution(executionArn=arn)
    name = arn.rsplit(":", 1)[1]
    ok, cleaned = emulator.invoke("Cleanup", {"execution": name, "state": {}})
    stopped = emulator.wait(arn)  # once the running block's workers gave up
    return {"kinds": kinds, "status": stopped["status"], "cleaned": ok and cleaned,
            "name": name}


@pytest.fixture(scope="module")
def demo_run(emulator: Emulator) -> Iterator[Callable[[], dict[str, Any]]]:
    """statemachine_default.json (the demo request), running while the other tests do."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(first_block_then_stop, emulator, event("statemachine_default"))
        yield lambda: future.result()


@pytest.fixture(scope="module", autouse=True)
def _slow_executions_start_first(demo_run: Any) -> None:
    """Start the long demo execution before the first test of the module. (The retried
    and the failing executions wait out the ASL's 150 s retry interval: their tests are
    marked slow and start them when they run.)"""


# ----------------------------------------------------------------------------- emulator


def test_a_client_with_only_the_printed_exports_runs_the_readme_request(
        emulator: Emulator, tmp_path: Path) -> None:
    """Acceptance 13.1: a boto3 script whose whole AWS setting is the printed exports."""
    assert set(emulator.exports) >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                     "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    assert emulator.outputs["BucketName"] == "fsd-local"
    model = tmp_path / "small.fsdm"
    model.write_bytes(cached_network(SMALL).read_bytes())
    request = {**event("statemachine_default"), "model": "models/mine/small.fsdm"}
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **emulator.exports}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(request), emulator.outputs["BucketName"],
         emulator.outputs["StateMachineArn"], str(model), str(sample_input_path())],
        capture_output=True, text=True, env=environment, timeout=EXECUTION_TIMEOUT_S,
        check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "SUCCEEDED"
    categories = np.array(result["categories"].split(), dtype=np.int64)
    np.testing.assert_array_equal(categories, reference(model, None))


def test_the_stack_has_no_endpoint_variable_unless_asked(emulator: Emulator) -> None:
    """template.yaml's EndpointUrl is empty by default: AWS_ENDPOINT_URL is absent."""
    configuration = emulator.client("lambda").get_function_configuration(
        FunctionName=emulator.outputs["WorkerFunctionName"])
    variables = configuration["Environment"]["Variables"]
    assert "AWS_ENDPOINT_URL" not in variables and variables["FSD_BUCKET"] == "fsd-local"


def test_every_event_is_documented_and_exercised() -> None:
    files = {path.stem for path in EVENTS.glob("*.json")}
    assert files == set(EXERCISED), "every events/*.json has a test below"
    readme = README.read_text()
    missing = [name for name in sorted(files) if f"events/{name}.json" not in readme]
    assert not missing, f"README does not document {missing}"


@pytest.mark.parametrize("name", ["plan_default", "plan_small"])
def test_a_plan_event_plans_its_run(emulator: Emulator, name: str) -> None:
    ok, output = emulator.invoke("Plan", event(name))
    assert ok, output
    request = event(name)["request"]
    assert output["run"]["workers"] == request["workers"] == len(output["items"])
    assert output["run"]["execution"] == event(name)["execution"]
    assert output["cursor"] == {"block": 0}
    ok, cleaned = emulator.invoke("Cleanup", {"execution": event(name)["execution"],
                                              "state": output})
    assert ok and cleaned["failed"] is False, cleaned


def test_the_stopped_execution_cleanup_event_removes_what_its_plan_left(
        emulator: Emulator) -> None:
    """The EventBridge rule's event for an execution stopped outside the state machine:
    the run's manifest (left by its Plan) decides what to tear down."""
    stopped = event("cleanup_stopped")
    planned = event("plan_small")
    assert stopped["execution"] == planned["execution"]
    ok, output = emulator.invoke("Plan", planned)
    assert ok, output
    ok, cleaned = emulator.invoke("Cleanup", stopped)
    assert ok and cleaned["failed"] is True, cleaned
    assert cleaned["cause"].startswith("ExecutionAborted: "), cleaned
    prefix = f"runs/{stopped['execution']}/"
    listed = emulator.client("s3").list_objects_v2(Bucket=emulator.outputs["BucketName"],
                                                   Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0, "the stopped run's objects are gone"


def test_the_plan_failure_cleanup_event_names_the_bad_field(emulator: Emulator) -> None:
    ok, output = emulator.invoke("Cleanup", event("cleanup_plan_failure"))
    assert ok and output["failed"] is True
    assert output["cause"].startswith("RequestError: request field 'workers'")


def test_sam_remote_invoke_with_an_event_file(emulator: Emulator, tmp_path: Path) -> None:
    """The README's ``sam remote invoke`` (the installed SAM CLI), with the exports only."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SAM_CLI_TELEMETRY": "0",
                   **emulator.exports}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("sam")), "remote", "invoke", "--stack-name",
         EMULATOR_STACK, "CleanupFunction", "--event-file",
         str(EVENTS / "cleanup_plan_failure.json")], capture_output=True, text=True,
        env=environment, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] is True and result["cause"].startswith("RequestError: ")


def test_the_worker_gather_and_cleanup_events_act_on_the_demo_run(emulator: Emulator) -> None:
    """In the order of a run: a block of workers (the worker event is its template: each
    worker needs its peers), Gather, Cleanup; then the failure cleanup of the same run."""
    block = event("worker_block")
    assert block["run"]["execution"] == EVENTS_EXECUTION
    workers = range(block["run"]["workers"])
    with ThreadPoolExecutor(len(workers)) as pool:
        results = list(pool.map(lambda w: emulator.invoke("Worker", {**block, "worker": w}),
                                workers))
    assert all(ok for ok, _ in results), results
    assert sorted(output["worker"] for _, output in results) == list(workers)

    ok, summary = emulator.invoke("Gather", event("gather_default"))
    assert ok, summary
    expected = reference(cached_network(SMALL), block["run"]["batch"])
    np.testing.assert_array_equal(emulator.categories(summary), expected)
    recorded = event("cleanup_default")["state"]["gather"]["summary"]
    timed = ("cost_usd", "totals")  # seconds (and API calls: polls) differ run to run
    assert {k: v for k, v in summary.items() if k not in timed} == \
        {k: v for k, v in recorded.items() if k not in timed}, "the sample is not stale"
    exact = ("messages_sent", "bytes_sent")
    assert {k: summary["totals"][k] for k in exact} == \
        {k: recorded["totals"][k] for k in exact}, "the sample's traffic is not stale"

    ok, cleaned = emulator.invoke("Cleanup", event("cleanup_default"))
    assert ok and cleaned["failed"] is False and cleaned["deleted_objects"] > 0, cleaned
    ok, cleaned = emulator.invoke("Cleanup", event("cleanup_failure"))
    assert ok and cleaned["failed"] is True, cleaned
    assert cleaned["cause"].startswith("RetryableBlockError: worker 2, block 1")
    queues = emulator.client("sqs").list_queues(QueueNamePrefix=f"fsd-{EVENTS_EXECUTION}-")
    assert not queues.get("QueueUrls"), "the run's queues are gone"


def test_the_small_state_machine_request_succeeds(emulator: Emulator) -> None:
    request = event("statemachine_small")
    done = emulator.execute(request)
    assert done["status"] == "SUCCEEDED", done
    np.testing.assert_array_equal(emulator.categories(json.loads(done["output"])),
                                  reference(cached_network(SMALL), request["rows"]))


def test_the_auto_request_runs_what_the_planner_chose(emulator: Emulator) -> None:
    """statemachine_auto.json: no shape, only an objective; the Plan step chooses within
    the stack's WorkerMemory and the request's 8 workers, and the run is the reference's."""
    request = event("statemachine_auto")
    done = emulator.execute(request)
    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    np.testing.assert_array_equal(emulator.categories(output),
                                  reference(cached_network(SMALL), request["rows"]))
    auto = output["auto"]
    assert auto["why"].startswith("fastest of"), auto  # the latency objective
    assert output["shape"].split(":")[0] in ("data", "pipeline", "hybrid")
    assert auto["predicted"]["p50_s"] > 0 and auto["predicted"]["sampled_rows"] == 300


# ----------------------------------------------------------------------------- 42 workers


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
    expected = reference(model, ROWS)
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


# ----------------------------------------------------------------------------- collected


def test_the_demo_request_runs(emulator: Emulator,
                               demo_run: Callable[[], dict[str, Any]]) -> None:
    """statemachine_default.json: planned, first block of 8 workers done, then stopped
    and cleaned up (the whole demo is `make run`'s, about as long)."""
    done = demo_run()
    kinds = done["kinds"]
    assert "TaskSucceeded" in kinds and kinds.count("MapIterationSucceeded") >= 8
    assert done["status"] == "ABORTED"
    assert done["cleaned"] and done["cleaned"]["failed"] is False, done
    queues = emulator.client("sqs").list_queues(QueueNamePrefix=f"fsd-{done['name']}-")
    assert not queues.get("QueueUrls")


@pytest.mark.slow  # one 150 s retry interval; test_distributed_map.py covers the retry in make test
def test_a_failed_item_fails_the_block_which_is_retried_from_its_checkpoint(
        cloud: LocalCloud, storage: Storage, model: Path,
        failing_once: tuple[StartedRun, list[tuple[int, int]]]) -> None:
    started, calls = failing_once
    report = finish_run(started)
    assert report.status == "SUCCEEDED" and report.categories is not None
    np.testing.assert_array_equal(report.categories, reference(model, ROWS))
    assert report.timeline.phases()["block_attempts"] == [2, 1], "block 0 ran twice"
    every = [(b, p) for b in range(2) for p in range(WORKERS)]
    assert set(calls) == set(every) and calls.count((1, 0)) == 1, "block 1 ran once"
    kinds = [e["type"] for e in execution_history(stepfunctions_client(cloud.aws),
                                                  report.execution_arn)]
    assert kinds.count("MapRunFailed") == 1 and kinds.count("MapRunSucceeded") == 2
    assert cloud.runtime.wait_idle(RECEIVE_TIMEOUT_S + 60), "the failed attempt's workers"
    assert leftovers(cloud, storage, FLAKY) == []


@pytest.mark.slow
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


def test_ctrl_c_stops_the_emulator_and_everything_it_started(emulator: Emulator) -> None:
    endpoint = emulator.exports["AWS_ENDPOINT_URL"]
    emulator.process.send_signal(signal.SIGINT)
    assert emulator.process.wait(60) == 0
    assert "fsd emulator: stopped" in emulator.stderr.read_text()
    deadline = time.monotonic() + 10
    while (left := processes_using(endpoint)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the emulator still running: {left}"


EXERCISED = {
    "statemachine_default": test_the_demo_request_runs,
    "statemachine_small": test_the_small_state_machine_request_succeeds,
    "statemachine_auto": test_the_auto_request_runs_what_the_planner_chose,
    "plan_default": test_a_plan_event_plans_its_run,
    "plan_small": test_a_plan_event_plans_its_run,
    "worker_block": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "gather_default": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_default": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_failure": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_plan_failure": test_the_plan_failure_cleanup_event_names_the_bad_field,
    "cleanup_stopped": test_the_stopped_execution_cleanup_event_removes_what_its_plan_left,
}
