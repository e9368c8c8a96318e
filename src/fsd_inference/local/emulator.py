"""The whole local AWS for the serverless application, in this process.

``local_serverless()`` = the embedded moto server (server.local_aws: S3, SQS,
CloudFormation... on loopback, MOTO_PORT set) + Step Functions that execute the ASL
(local.stepfunctions) + Lambda functions that run the project's handlers in warm local
processes (local.lambda_runtime). Deploy template.yaml into it with local.stack and
drive it exactly as a stack on AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsd_inference.cloud.stack import StackOutputs
from fsd_inference.config import DEFAULT_REGION, AwsConfig
from fsd_inference.local import stepfunctions
from fsd_inference.local.lambda_hook import hook_target, lambda_runtime
from fsd_inference.local.lambda_runtime import LambdaRuntime
from fsd_inference.local.server import LOCAL_BUCKET, LOOPBACK, local_aws


@dataclass(frozen=True)
class LocalCloud:
    aws: AwsConfig
    runtime: LambdaRuntime

    def function(self, name: str) -> Any:
        """moto's LambdaFunction of that name (for prewarming)."""
        from moto.awslambda.models import lambda_backends
        from moto.core.models import DEFAULT_ACCOUNT_ID

        return lambda_backends[DEFAULT_ACCOUNT_ID][self.aws.region].get_function(name)

    def prewarm(self, stack: StackOutputs) -> None:
        """Start the init of the stack's functions in the background (one fork server
        each), to overlap with the upload; sandboxes then fork in milliseconds."""
        for name in stack.functions.values():
            self.runtime.prewarm(self.function(name))


@contextmanager
def local_serverless(region: str = DEFAULT_REGION, root: Path | None = None,
                     host: str = LOOPBACK, port: int = 0,
                     bucket: str | None = LOCAL_BUCKET) -> Iterator[LocalCloud]:
    """The embedded AWS with executing Step Functions and local Lambda, for the block
    (``host``, ``port``, ``bucket``: as server.local_aws)."""
    hook_target()  # fail before starting anything if moto's hook points moved
    stepfunctions.prepare()
    with local_aws(region, bucket, port, host) as aws, \
            stepfunctions.executing_step_functions(), \
            lambda_runtime(aws.endpoint_url or "", root) as runtime:
        yield LocalCloud(aws, runtime)
