"""``fsd run --stack`` never hangs: it follows the real status and history of the
execution, fails clearly against an endpoint that does not run executions or when
nothing moves, and, interrupted, says how to stop what it started (or stops it).

The endpoint without executions is a bare ``moto_server`` (moto's own console script,
as a user would start it): its Step Functions keeps every execution RUNNING and
answers with a canned history that "succeeds" after 20 s. The other cases use the
embedded AWS with a hook that holds an invocation for as long as the test wants.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_inference.app.driver import RunOptions, finish_run, start_run
from fsd_inference.app.follow import Stalled
from fsd_inference.app.interrupt import interrupted
from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.cloud.timeline import HistoryReader, execution_history
from fsd_inference.config import AwsConfig
from fsd_inference.local.emulator import LocalCloud
from fsd_inference.local.lambda_runtime import Invocation
from fsd_inference.local.server import DUMMY_CREDENTIALS
from fsd_inference.local.stack import deploy_stack
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.storage import S3Storage

STACK = "fsd-follow"
STALL_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net-1024x2.fsdm"
    save_network(generate(GeneratorParams(1024, 2, 5)), path)
    return path


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for this process and the ``fsd`` it starts; no endpoint."""
    for name in [k for k in os.environ if k.startswith(("AWS_", "FSD_"))]:
        monkeypatch.delenv(name)
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


# ----------------------------------------------------------------------------- bare moto


@pytest.fixture
def bare_moto(tmp_path: Path, credentials: None) -> Iterator[str]:
    """``moto_server`` on loopback with the stack deployed (its Step Functions does not
    execute), as someone might point ``fsd run --stack`` at it."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                               "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        deploy_stack("fsd-bare", AwsConfig(endpoint_url=endpoint, region="us-east-1"))
        yield endpoint
    finally:
        server.terminate()
        server.wait(30)


def test_a_bare_moto_server_fails_within_the_stall_timeout(bare_moto: str, model: Path,
                                                           run_fsd: Any,
                                                           assert_clean_error: Any) -> None:
    started = time.monotonic()
    done = run_fsd("run", "--stack", "fsd-bare", "--endpoint-url", bare_moto, "--model", model,
                   "--rows", 20, "--workers", 2, "--stall-timeout", STALL_S, "--quiet")
    elapsed = time.monotonic() - started
    assert_clean_error(done, "does not run Step Functions executions",
                       "DescribeExecution still says RUNNING",
                       "aws stepfunctions stop-execution --execution-arn "
                       "arn:aws:states:us-east-1:123456789012:execution:fsd-bare-inference:")
    assert elapsed < STALL_S + 30, f"took {elapsed:.0f} s"


# ----------------------------------------------------------------------------- embedded


def options(model: Path, name: str, stall_s: float = 1200.0) -> RunOptions:
    return RunOptions(model=model, input=sample_input_path(), rows=20, workers=2,
                      channel="queue", partition="random", receive_timeout_s=10,
                      poll_s=0.25, stall_s=stall_s, execution_name=name)


Match = Callable[[dict[str, Any]], bool]


def plan_of(execution: Callable[[str], bool]) -> Match:
    return lambda event: "request" in event and execution(str(event.get("execution")))


def worker_of(execution: str) -> Match:
    return lambda event: "worker" in event and event.get("run", {}).get("execution") == execution


def holding(match: Match) -> tuple[Callable[[Invocation], None], threading.Event]:
    """A hook that holds the invocations ``match`` picks until released."""
    release = threading.Event()

    def hook(invocation: Invocation) -> None:
        if isinstance(invocation.event, dict) and match(invocation.event):
            release.wait(120)

    return hook, release


def test_no_progress_for_the_stall_time_stops_the_wait(cloud: LocalCloud, stack: StackOutputs,
                                                       model: Path) -> None:
    name = "stalls-in-plan"
    hook, release = holding(plan_of(lambda execution: execution == name))
    with cloud.runtime.hooked(hook):
        started_run = start_run(STACK, options(model, name, stall_s=3.0), cloud.aws)
        started = time.monotonic()
        try:
            with pytest.raises(Stalled) as stalled:
                finish_run(started_run)
        finally:
            release.set()
    assert 3.0 <= time.monotonic() - started < 15
    message = str(stalled.value)
    assert f"execution {name} made no progress for 3 s" in message and "Plan" in message
    assert f"stop-execution --execution-arn {started_run.execution_arn}" in message
    stepfunctions_client(cloud.aws).stop_execution(executionArn=started_run.execution_arn)


def test_ctrl_c_says_how_to_stop_the_execution(cloud: LocalCloud, stack: StackOutputs,
                                               model: Path, tmp_path: Path) -> None:
    """``fsd run --stack`` in its own process, not on a terminal: it does not ask."""
    hook, release = holding(plan_of(lambda execution: execution.startswith("fsd-")))
    sfn = stepfunctions_client(cloud.aws)
    environment = {**os.environ, "FSD_CACHE_DIR": str(tmp_path / "cache")}
    with cloud.runtime.hooked(hook):
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("fsd")), "run", "--stack", STACK,
             "--endpoint-url", cloud.aws.endpoint_url or "", "--model", str(model),
             "--rows", "20", "--workers", "2", "--partition", "random"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environment, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            arn = None
            while arn is None and time.monotonic() < deadline:
                running = sfn.list_executions(stateMachineArn=stack.state_machine_arn,
                                              statusFilter="RUNNING")["executions"]
                arn = next((e["executionArn"] for e in running
                            if e["name"].startswith("fsd-")), None)
                time.sleep(0.2)
            assert arn is not None, "the execution started"
            time.sleep(1.0)  # following it
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            release.set()
            if process.poll() is None:
                process.kill()
    name = arn.rsplit(":", 1)[1]
    assert process.returncode == 130, stderr
    assert f"interrupted: execution {name} keeps running on stack {STACK}" in stderr
    assert f"aws stepfunctions stop-execution --execution-arn {arn}" in stderr
    assert "Traceback" not in stderr
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    sfn.stop_execution(executionArn=arn)


def test_asked_to_stop_it_stops_the_execution_and_cleans_up(cloud: LocalCloud,
                                                            stack: StackOutputs,
                                                            model: Path) -> None:
    name = "interrupted-and-stopped"
    hook, release = holding(worker_of(name))
    questions: list[str] = []
    lines: list[str] = []

    def yes(question: str) -> bool:
        questions.append(question)
        return True

    with cloud.runtime.hooked(hook):
        started = start_run(STACK, options(model, name), cloud.aws)
        storage = S3Storage(stack.bucket, s3_client(cloud.aws))
        layout = RunLayout(name)
        deadline = time.monotonic() + 60
        while not storage.exists(layout.manifest) and time.monotonic() < deadline:
            time.sleep(0.2)  # the Plan has run: queues and scratch exist
        assert storage.exists(layout.manifest)
        try:
            interrupted(started, lines.append, yes)
        finally:
            release.set()
    assert questions == [f"stop execution {name} on stack {STACK} and delete its scratch? "
                         f"[y/N] "]
    assert lines[-1] == f"execution {name}: stopped, and its queues and scratch deleted\n"
    sfn = stepfunctions_client(cloud.aws)
    deadline = time.monotonic() + 30
    while sfn.describe_execution(executionArn=started.execution_arn)["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert sfn.describe_execution(executionArn=started.execution_arn)["status"] == "ABORTED"
    assert cloud.runtime.wait_idle(60)
    queues = sqs_client(cloud.aws).list_queues(QueueNamePrefix=f"fsd-{name}-")
    assert not queues.get("QueueUrls") and not list(storage.keys(layout.prefix))


def test_the_history_is_read_incrementally_and_completely(cloud: LocalCloud,
                                                          stack: StackOutputs,
                                                          model: Path) -> None:
    """A follower's polls fetch only what is new (newest first, small pages) and end with
    exactly the history a full read returns, on the embedded Step Functions."""
    started = start_run(STACK, options(model, "read-incrementally"), cloud.aws)
    sfn = stepfunctions_client(cloud.aws)
    returned: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        returned.append(len(parsed.get("events", [])))

    sfn.meta.events.register("after-call.sfn.GetExecutionHistory", count)
    reader = HistoryReader(sfn, started.execution_arn, page_size=4)
    polls = []  # (events before the poll, events after, events transferred)
    deadline = time.monotonic() + 120
    while True:
        before, calls = len(reader.events), len(returned)
        running = sfn.describe_execution(executionArn=started.execution_arn)["status"]
        after = len(reader.read())
        polls.append((before, after, sum(returned[calls:])))
        if running != "RUNNING":
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    full = execution_history(sfn, started.execution_arn)
    assert reader.events == full and full[-1]["type"] == "ExecutionSucceeded"
    assert [int(e["id"]) for e in full] == list(range(1, len(full) + 1))
    assert len(polls) > 3
    for before, after, transferred in polls[1:]:
        # the new events, plus at most one page that reaches back to a known one
        assert transferred <= after - before + 4, polls
