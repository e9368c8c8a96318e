"""Functional-test fixtures: one embedded moto server on loopback for the session, and
per module, the whole embedded AWS with the application's stack deployed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from fsd_inference.app.driver import RunOptions, StartedRun, start_run
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.config import AwsConfig
from fsd_inference.local import local_aws
from fsd_inference.local.emulator import LocalCloud, local_serverless
from fsd_inference.local.lambda_runtime import InvokeHook
from fsd_inference.local.stack import deploy_stack


@pytest.fixture(scope="session")
def aws() -> Iterator[AwsConfig]:
    """A real moto server (HTTP on 127.0.0.1), not an in-process mock: workers in other
    processes reach it exactly as they would reach AWS."""
    with local_aws() as config:
        yield config


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    """The embedded AWS with executing Step Functions and the handlers as Lambda
    functions (fsd_inference.local), for one module (a runtime is process-wide)."""
    with local_serverless() as local:
        yield local


@pytest.fixture(scope="module")
def stack(cloud: LocalCloud, request: pytest.FixtureRequest) -> StackOutputs:
    """template.yaml deployed into ``cloud`` as the stack named by the module's STACK."""
    return deploy_stack(request.module.STACK, cloud.aws).outputs


BackgroundRun = Callable[[RunOptions, InvokeHook], AbstractContextManager[StartedRun]]


@pytest.fixture(scope="module")
def background_run(cloud: LocalCloud, stack: StackOutputs) -> BackgroundRun:
    """``with background_run(options, hook) as started:`` an execution on the module's
    stack, started at once with ``hook`` installed; the test collects it with
    finish_run. Afterwards the hook goes and, if only part of the module ran and the
    execution still runs, it is stopped."""

    @contextmanager
    def run(options: RunOptions, hook: InvokeHook) -> Iterator[StartedRun]:
        cloud.runtime.add_hook(hook)
        try:
            started = start_run(stack.stack_name, options, cloud.aws)
            yield started
        finally:
            cloud.runtime.remove_hook(hook)
        sfn = stepfunctions_client(cloud.aws)
        if sfn.describe_execution(executionArn=started.execution_arn)["status"] == "RUNNING":
            sfn.stop_execution(executionArn=started.execution_arn)

    return run
