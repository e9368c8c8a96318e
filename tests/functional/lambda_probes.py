"""Probe Lambda functions for the local runtime's tests: a small package of handlers
(echo, fail, sleep, barrier, crash, stamp) created through the embedded server's Lambda
API and invoked through it, as Step Functions invokes functions."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
import time
import zipfile
from typing import Any

from fsd_inference.cloud.stack import service_client
from fsd_inference.config import AwsConfig

PROBE = textwrap.dedent('''
    import os, pathlib, time

    class ProbeError(Exception):
        pass

    def echo(event, context):
        print("echo called", flush=True)
        names = ("AWS_ENDPOINT_URL", "PROBE_VALUE", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "TMPDIR")
        return {"event": event, "pid": os.getpid(),
                "remaining_ms": context.get_remaining_time_in_millis(),
                "env": {name: os.environ.get(name) for name in names}}

    def fail(event, context):
        raise ProbeError(f"asked to fail: {event['why']}")

    def sleep(event, context):
        time.sleep(event["seconds"])
        return {"pid": os.getpid()}

    def barrier(event, context):
        folder = pathlib.Path(event["folder"])
        (folder / str(event["index"])).touch()
        deadline = time.monotonic() + event["timeout"]
        while len(list(folder.iterdir())) < event["parties"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(list(folder.iterdir()))} ran at once")
            time.sleep(0.02)
        return {"pid": os.getpid()}

    def crash(event, context):
        os._exit(3)

    def stamp(event, context):
        """Sleeps, fails if asked to, and says when it ran (for concurrency checks)."""
        started = time.time()
        time.sleep(event.get("seconds", 0))
        if event.get("fail"):
            raise ProbeError(f"item {event.get('index')} asked to fail")
        return {"index": event.get("index"), "start": started, "end": time.time(),
                "pid": os.getpid()}
''')
ROLE = "arn:aws:iam::123456789012:role/probe"


def probe_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("probe.py", PROBE)
    return buffer.getvalue()


_COUNTER = iter(range(10_000))


def make_function(api: Any, handler: str, timeout: int = 30, **environment: str) -> str:
    name = f"probe-{handler.replace('.', '-')}-{next(_COUNTER)}"
    api.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, Handler=handler,
                        Code={"ZipFile": probe_zip()}, Timeout=timeout, MemorySize=512,
                        Environment={"Variables": environment})
    return name


def invoke(api: Any, name: str, event: Any, tail: bool = False) -> tuple[Any, dict[str, Any]]:
    response = api.invoke(FunctionName=name, Payload=json.dumps(event),
                          LogType="Tail" if tail else "None")
    return json.loads(response["Payload"].read()), response




def lambda_api(aws: AwsConfig) -> Any:
    """The Lambda API of the server, with the probes' role created."""
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    iam = service_client("iam", aws)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):  # moto's state
        iam.create_role(RoleName=ROLE.rsplit("/", 1)[1],  # outlives a server of a module
                        AssumeRolePolicyDocument=json.dumps(trust))
    return service_client("lambda", aws)


def function_arn(api: Any, name: str) -> str:
    arn: str = api.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    return arn


def run_execution(sfn: Any, machine_arn: str, name: str, execution_input: Any,
                  timeout_s: float = 60) -> dict[str, Any]:
    """Start an execution and wait for its end; DescribeExecution."""
    execution = sfn.start_execution(stateMachineArn=machine_arn, name=name,
                                    input=json.dumps(execution_input))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description: dict[str, Any] = sfn.describe_execution(
            executionArn=execution["executionArn"])
        if description["status"] != "RUNNING":
            return description
        time.sleep(0.2)
    raise AssertionError(f"execution {name} did not end within {timeout_s:g} s")
