"""A deployed stack of template.yaml, as its CloudFormation outputs describe it.

``fsd run --stack NAME`` needs only the stack's name: the bucket, the state machine and
the function names come from DescribeStacks (template.yaml's Outputs), on AWS or on the
embedded moto server alike. Also the clients for the control-plane services the driver
uses (CloudFormation, Step Functions, Lambda), built like aws.py builds SQS and S3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.config import DEFAULT_QUEUE_PREFIX, AwsConfig
from fsd_inference.exceptions import ConfigError

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 5
REQUIRED_OUTPUTS = ("BucketName", "StateMachineArn")


def service_client(service: str, aws: AwsConfig) -> Any:
    """A client for ``service`` at ``aws``'s endpoint, with bounded timeouts and retries."""
    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS})
    return boto3.session.Session().client(service, region_name=aws.region,  # type: ignore[call-overload]
                                          endpoint_url=aws.endpoint_url, config=config)


def lambda_invoke_client(aws: AwsConfig, timeout_s: float = 960.0) -> Any:
    """A Lambda client for synchronous invokes: the read timeout above the function's
    (900 s) and a single attempt, since a retried invoke of a worker would put two
    copies of it in the exchange."""
    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=timeout_s,
                    retries={"total_max_attempts": 1})
    return boto3.session.Session().client("lambda", region_name=aws.region,
                                          endpoint_url=aws.endpoint_url, config=config)


def cloudformation_client(aws: AwsConfig) -> Any:
    return service_client("cloudformation", aws)


def stepfunctions_client(aws: AwsConfig) -> Any:
    return service_client("stepfunctions", aws)


@dataclass(frozen=True)
class StackOutputs:
    """What the application needs from a deployed stack."""

    stack_name: str
    bucket: str
    state_machine_arn: str
    functions: dict[str, str]  # "Plan" -> the function's name
    # every queue name of the stack's executions starts with it (per stack by default)
    queue_prefix: str = DEFAULT_QUEUE_PREFIX

    @classmethod
    def from_outputs(cls, stack_name: str, outputs: dict[str, str]) -> StackOutputs:
        missing = [name for name in REQUIRED_OUTPUTS if not outputs.get(name)]
        if missing:
            raise ConfigError(f"stack {stack_name} has no output(s) {', '.join(missing)}: "
                              f"is it a stack of this application's template.yaml?")
        functions = {key.removesuffix("FunctionName"): value for key, value in outputs.items()
                     if key.endswith("FunctionName")}
        return cls(stack_name, outputs["BucketName"], outputs["StateMachineArn"], functions,
                   outputs.get("QueuePrefix") or DEFAULT_QUEUE_PREFIX)


def stack_outputs(stack_name: str, aws: AwsConfig, client: Any = None) -> StackOutputs:
    """DescribeStacks -> StackOutputs; a clear error if the stack is missing or not ready."""
    cfn = client or cloudformation_client(aws)
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise ConfigError(f"stack {stack_name}: {exc.response['Error'].get('Message', exc)} "
                          f"(region {aws.region})") from exc
    except BotoCoreError as exc:
        raise ConfigError(f"stack {stack_name}: cannot reach CloudFormation: {exc}") from exc
    if not stacks:
        raise ConfigError(f"stack {stack_name} does not exist (region {aws.region})")
    stack = stacks[0]
    status = stack.get("StackStatus", "")
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status or "DELETE" in status:
        raise ConfigError(f"stack {stack_name} is {status}, not deployed")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return StackOutputs.from_outputs(stack_name, outputs)
