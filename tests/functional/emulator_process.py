"""``fsd emulator`` in its own process, as a user runs it, for the tests.

:func:`started_emulator` starts it on a free port (``--port 0 --demo``) with an
environment stripped of every AWS and FSD setting, waits for its announcement and
parses what it printed: the ``export`` lines and the stack's outputs. A client built
from :class:`Emulator` uses nothing else.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.config import Config

START_TIMEOUT_S = 300
EXECUTION_TIMEOUT_S = 600


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

    def start(self, request: dict[str, Any]) -> str:
        arn: str = self.client("stepfunctions").start_execution(
            stateMachineArn=self.outputs["StateMachineArn"],
            input=json.dumps(request))["executionArn"]
        return arn

    def wait(self, arn: str) -> dict[str, Any]:
        """DescribeExecution once the execution has ended."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + EXECUTION_TIMEOUT_S
        while (done := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{arn} still running"
            time.sleep(1)
        described: dict[str, Any] = done
        return described

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.wait(self.start(request))

    def categories(self, output: dict[str, Any]) -> np.ndarray:
        key = output["categories_uri"].split("/", 3)[3]
        body = self.client("s3").get_object(Bucket=self.outputs["BucketName"], Key=key)
        return np.array(body["Body"].read().decode().split(), dtype=np.int64)


def fsd_command() -> list[str]:
    """The ``fsd`` console script next to this interpreter (as a user runs it)."""
    return [str(Path(sys.executable).with_name("fsd"))]


def _environment(cache: Path) -> dict[str, str]:
    """The test's environment without any AWS setting: the emulator brings its own."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSD_"))}
    return {**keep, "FSD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}


@contextmanager
def started_emulator(work: Path, cache: Path) -> Iterator[Emulator]:
    """``fsd emulator --port 0 --demo`` for the block; SIGINT (then KILL) after it."""
    stderr_path = work / "stderr.txt"
    with open(stderr_path, "w") as stderr:
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

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not started.wait(1.0) and reader.is_alive() and time.monotonic() < deadline:
            pass  # the reader ends when the emulator does (it failed to start)
        assert started.is_set(), \
            f"the emulator did not start: {lines} {stderr_path.read_text()}"
        handle = Emulator(process, lines, stderr_path)
        for line in lines:
            if match := re.fullmatch(r"export (\w+)=(\S+)", line):
                handle.exports[match[1]] = match[2]
            elif match := re.fullmatch(r" {2}(\w+) +(\S+)", line):
                handle.outputs[match[1]] = match[2]
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            finally:
                if process.poll() is None:
                    process.kill()


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
