"""``fsd emulator``: the embedded AWS held open for the tools people already use.

The same local AWS ``fsd run`` starts for one execution (local.local_serverless: moto
with executing Step Functions, the handlers as Lambda functions), with template.yaml
deployed into it as stack ``fsd-local``, kept up until told to stop. What it prints is
what a shell, the aws CLI, ``sam remote invoke``, ``sam local`` or a boto3 script needs:
the endpoint, the stack's outputs and ``export`` lines (endpoint, dummy credentials,
region, and the bucket for ``sam local``, which reads declared variables from the
shell). The stack's bucket is named after the stack, so events/ can name it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fsd_inference.app.demo import EVENTS_EXECUTION, DemoData, prepare_events
from fsd_inference.cloud.stack import cloudformation_client
from fsd_inference.config import (
    DEFAULT_REGION,
    ENV_BUCKET,
    ENV_DEFAULT_REGION,
    ENV_ENDPOINT,
    AwsConfig,
)
from fsd_inference.constants import EMULATOR_PORT, EMULATOR_STACK
from fsd_inference.local.server import DUMMY_CREDENTIALS, LOOPBACK
from fsd_inference.model.tsv import atomic_path

Say = Callable[[str], None]


@dataclass(frozen=True)
class EmulatorOptions:
    host: str = LOOPBACK
    port: int = EMULATOR_PORT
    stack: str = EMULATOR_STACK
    region: str = DEFAULT_REGION
    demo: bool = False
    env_file: Path | None = None


def exports(endpoint: str, region: str, bucket: str) -> dict[str, str]:
    """What a client needs in its environment to use the emulator (and its stack)."""
    return {ENV_ENDPOINT: endpoint, **DUMMY_CREDENTIALS, ENV_DEFAULT_REGION: region,
            "AWS_REGION": region, ENV_BUCKET: bucket}


def announcement(endpoint: str, options: EmulatorOptions, outputs: dict[str, str],
                 environment: dict[str, str], seconds: float,
                 demo: DemoData | None) -> list[str]:
    listening = "" if options.host == LOOPBACK else f" (listening on {options.host})"
    lines = [f"embedded AWS at {endpoint}{listening}: S3, SQS, Lambda, Step Functions, "
             f"CloudFormation, IAM, CloudWatch Logs",
             f"stack {options.stack} deployed from template.yaml in {seconds:.1f} s; "
             f"outputs:"]
    width = max(len(key) for key in outputs)
    lines += [f"  {key:<{width}}  {value}" for key, value in sorted(outputs.items())]
    if demo is not None:
        lines.append(f"demo data: {', '.join(demo.keys)}; run {EVENTS_EXECUTION} planned "
                     f"and computed ({demo.run['blocks']} blocks of {demo.run['workers']} "
                     f"workers) for the sample events in events/")
    lines.append("in another shell:")
    lines += [f"export {name}={value}" for name, value in environment.items()]
    lines.append("Ctrl-C stops it.")
    return lines


def serve(options: EmulatorOptions, stop: threading.Event, say: Say,
          out: Say = print) -> None:
    """Start, deploy, (prepare the demo), announce, and wait until ``stop`` is set."""
    from fsd_inference.local.emulator import local_serverless
    from fsd_inference.local.stack import deploy_stack

    with local_serverless(options.region, host=options.host, port=options.port,
                          bucket=None) as cloud:
        endpoint = cloud.aws.endpoint_url or ""
        say(f"starting the embedded AWS at {endpoint}, deploying template.yaml")
        deployed = deploy_stack(options.stack, cloud.aws, bucket_name=options.stack)
        cloud.prewarm(deployed.outputs)
        demo = prepare_events(cloud.aws, deployed.outputs, say) if options.demo else None
        environment = exports(endpoint, options.region, deployed.outputs.bucket)
        if options.env_file is not None:
            with atomic_path(options.env_file) as temporary:
                temporary.write_text("".join(f"export {k}={v}\n"
                                             for k, v in environment.items()))
        outputs = _outputs(cloud.aws, options.stack)
        for line in announcement(endpoint, options, outputs, environment,
                                 deployed.seconds, demo):
            out(line)
        while not stop.wait(1.0):
            pass
        say("stopping: sandboxes, fork servers, the server")


def _outputs(aws: AwsConfig, stack: str) -> dict[str, str]:
    """Every output of the stack (StackOutputs keeps only what the driver needs)."""
    described = cloudformation_client(aws).describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
