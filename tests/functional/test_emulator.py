"""``fsd emulator``: the embedded AWS held open for other programs, and events/ against it.

The emulator runs as the user runs it (``fsd emulator --demo`` in its own process, on
any free port); clients get nothing but the ``export`` lines it prints. Every file in
events/ is exercised against it the way the README shows: the Step Functions requests
through StartExecution, the function events through Lambda's Invoke (what ``aws lambda
invoke`` and ``sam remote invoke`` call), the worker event as the block it is the
template of. The demo request (statemachine_default.json, the 1024 x 120 network) is
the slow one: it starts in the background with the module and is collected last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config

from fsd_inference.app.demo import DEMO, EVENTS_EXECUTION, SMALL, cached_network
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.load import load_model
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
README = ROOT / "README.md"
START_TIMEOUT_S = 300
EXECUTION_TIMEOUT_S = 600
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


@dataclass
class Emulator:
    process: subprocess.Popen[str]
    stdout: list[str]
    stderr: Path
    exports: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def client(self, service: str, read_timeout: float = 60) -> Any:
        return boto3.session.Session(
            aws_access_key_id=self.exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.exports["AWS_SECRET_ACCESS_KEY"],
            region_name=self.exports["AWS_DEFAULT_REGION"]).client(
            service, endpoint_url=self.exports["AWS_ENDPOINT_URL"],  # type: ignore[call-overload]
            config=Config(read_timeout=read_timeout, retries={"total_max_attempts": 1}))

    def invoke(self, role: str, event: Any) -> tuple[bool, Any]:
        """(succeeded, payload) of the stack's ``role`` function on ``event``."""
        response = self.client("lambda", 900).invoke(
            FunctionName=self.outputs[f"{role}FunctionName"], Payload=json.dumps(event))
        return "FunctionError" not in response, json.loads(response["Payload"].read())

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        sfn = self.client("stepfunctions")
        arn = sfn.start_execution(stateMachineArn=self.outputs["StateMachineArn"],
                                  input=json.dumps(request))["executionArn"]
        deadline = time.monotonic() + EXECUTION_TIMEOUT_S
        while (done := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{request} still running"
            time.sleep(1)
        described: dict[str, Any] = done
        return described

    def categories(self, output: dict[str, Any]) -> np.ndarray:
        key = output["categories_uri"].split("/", 3)[3]
        body = self.client("s3").get_object(Bucket=self.outputs["BucketName"], Key=key)
        return np.array(body["Body"].read().decode().split(), dtype=np.int64)


def event(name: str) -> Any:
    return json.loads((EVENTS / f"{name}.json").read_text())


def reference(model: Path, rows: int | None) -> np.ndarray:
    network = load_model(model)
    inputs = read_input(sample_input_path(), neurons=network.neurons)
    return infer(network, inputs[:rows] if rows else inputs).categories


def fsd_command() -> list[str]:
    """The ``fsd`` console script next to this interpreter (as a user runs it)."""
    return [str(Path(sys.executable).with_name("fsd"))]


def _environment(cache: Path) -> dict[str, str]:
    """The test's environment without any AWS setting: the emulator brings its own."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSD_"))}
    return {**keep, "FSD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def emulator(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    work = tmp_path_factory.mktemp("emulator")
    with open(work / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [*fsd_command(), "emulator", "--port", "0", "--demo", "--env-file",
             str(work / "emulator.env")], cwd=work, env=_environment(cache), text=True,
            stdout=subprocess.PIPE, stderr=stderr)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops it."):
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert started.wait(START_TIMEOUT_S), \
            f"the emulator did not start: {lines} {(work / 'stderr.txt').read_text()}"
        handle = Emulator(process, lines, work / "stderr.txt")
        for line in lines:
            if match := re.fullmatch(r"export (\w+)=(\S+)", line):
                handle.exports[match[1]] = match[2]
            elif match := re.fullmatch(r" {2}(\w+) +(\S+)", line):
                handle.outputs[match[1]] = match[2]
        yield handle
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()


@pytest.fixture(scope="module")
def demo_run(emulator: Emulator) -> Iterator[Callable[[], dict[str, Any]]]:
    """statemachine_default.json (the demo request), running while the other tests do."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(emulator.execute, event("statemachine_default"))
        yield lambda: future.result()


# ----------------------------------------------------------------------------- the command


def test_a_client_with_only_the_printed_exports_runs_the_readme_request(
        emulator: Emulator, demo_run: Any, tmp_path: Path, cache: Path) -> None:
    """Acceptance 13.1: a boto3 script whose whole AWS setting is the printed exports."""
    assert set(emulator.exports) >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                     "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    assert emulator.outputs["BucketName"] == "fsd-local"
    model = tmp_path / "small.fsdm"
    model.write_bytes(cached_network(SMALL).read_bytes())
    request = {**event("statemachine_default"), "model": "models/mine/small.fsdm"}
    environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **emulator.exports}
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


def test_the_function_events_are_documented_and_all_exercised() -> None:
    files = {path.stem for path in EVENTS.glob("*.json")}
    assert files == set(EXERCISED), "every events/*.json has a test below"
    readme = README.read_text()
    missing = [name for name in sorted(files) if f"events/{name}.json" not in readme]
    assert not missing, f"README does not document {missing}"


# ----------------------------------------------------------------------------- events


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


def test_the_plan_failure_cleanup_event_names_the_bad_field(emulator: Emulator) -> None:
    ok, output = emulator.invoke("Cleanup", event("cleanup_plan_failure"))
    assert ok and output["failed"] is True
    assert output["cause"].startswith("RequestError: request field 'workers'")


def test_the_worker_gather_and_cleanup_events_act_on_the_demo_run(emulator: Emulator,
                                                                  cache: Path) -> None:
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
    assert {k: v for k, v in summary.items() if k != "cost_usd"} == \
        {k: v for k, v in recorded.items() if k != "cost_usd"}, "the sample is not stale"

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


def test_the_demo_request_succeeds(emulator: Emulator,
                                   demo_run: Callable[[], dict[str, Any]]) -> None:
    done = demo_run()
    assert done["status"] == "SUCCEEDED", done
    np.testing.assert_array_equal(emulator.categories(json.loads(done["output"])),
                                  reference(cached_network(DEMO), None))


def test_ctrl_c_stops_everything_it_started(emulator: Emulator) -> None:
    endpoint = emulator.exports["AWS_ENDPOINT_URL"]
    emulator.process.send_signal(signal.SIGINT)
    assert emulator.process.wait(60) == 0
    assert "fsd emulator: stopped" in emulator.stderr.read_text()
    deadline = time.monotonic() + 10
    while (left := processes_using(endpoint)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the emulator still running: {left}"


def processes_using(endpoint: str) -> list[int]:
    """Processes whose environment names the endpoint (sandboxes, fork servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"AWS_ENDPOINT_URL={endpoint}\0".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


EXERCISED = {
    "statemachine_default": test_the_demo_request_succeeds,
    "statemachine_small": test_the_small_state_machine_request_succeeds,
    "plan_default": test_a_plan_event_plans_its_run,
    "plan_small": test_a_plan_event_plans_its_run,
    "worker_block": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "gather_default": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_default": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_failure": test_the_worker_gather_and_cleanup_events_act_on_the_demo_run,
    "cleanup_plan_failure": test_the_plan_failure_cleanup_event_names_the_bad_field,
}
