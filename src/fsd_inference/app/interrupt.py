"""Ctrl-C while ``fsd run --stack`` follows an execution it started.

The execution runs on in the cloud whatever happens to this process, so the driver
says which one and how to stop it; on a terminal it asks first and, if told to, stops
it (StopExecution) and runs the stack's Cleanup function on it: a stopped execution
never reaches its own cleanup state, so its queues and scratch would stay behind until
the bucket's lifecycle rules expire them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.app.driver import StartedRun
from fsd_inference.app.follow import stop_command
from fsd_inference.cloud.stack import lambda_invoke_client, stepfunctions_client

Ask = Callable[[str], bool]
Say = Callable[[str], None]


def ask_on_terminal(question: str) -> bool:
    """y/N on a terminal; False without asking when stdin is not one (scripts, CI)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def stop_and_clean(started: StartedRun) -> str:
    """StopExecution, then the Cleanup function on it; what was done, one line."""
    stepfunctions_client(started.aws).stop_execution(
        executionArn=started.execution_arn, error="Interrupted",
        cause="fsd run was interrupted and asked to stop the execution")
    function = started.stack.functions.get("Cleanup")
    if function is None:
        return "stopped; the stack names no Cleanup function, so its scratch stays"
    try:
        response = lambda_invoke_client(started.aws).invoke(
            FunctionName=function, Payload=json.dumps(
                {"execution": started.execution_name, "state": {}}).encode())
        failed = "FunctionError" in response
    except (ClientError, BotoCoreError) as exc:
        return f"stopped; its cleanup could not run ({exc})"
    if failed:
        return f"stopped; its cleanup failed: {response['Payload'].read().decode()[:300]}"
    return "stopped, and its queues and scratch deleted"


def interrupted(started: StartedRun, say: Say, ask: Ask = ask_on_terminal) -> None:
    """Say (or ask and do) what becomes of the execution ``fsd run`` was following."""
    name, stack = started.execution_name, started.stack.stack_name
    say("\n")
    if ask(f"stop execution {name} on stack {stack} and delete its scratch? [y/N] "):
        say(f"execution {name}: {stop_and_clean(started)}\n")
        return
    say(f"interrupted: execution {name} keeps running on stack {stack}; stop it with: "
        f"{stop_command(started.execution_arn)}\n")
