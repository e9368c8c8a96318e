"""The local AWS runtime: an embedded moto server, started when nothing else is set up,
and, for the serverless application, the same server with executing Step Functions and
the project's handlers as Lambda functions (local_serverless; see emulator.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import boto3

from fsd_inference.config import ENV_ENDPOINT, AwsConfig
from fsd_inference.local.emulator import LocalCloud, local_serverless
from fsd_inference.local.server import LOCAL_BUCKET, local_aws, patched_environ


def aws_configured() -> bool:
    """An endpoint or credentials are configured (env, files, SSO, containers).

    The EC2 instance-metadata lookup is skipped unless AWS_EC2_METADATA_DISABLED is set
    explicitly (to "false"): probing a link-local address from a laptop costs a timeout.
    """
    if os.environ.get(ENV_ENDPOINT):
        return True
    imds = os.environ.get("AWS_EC2_METADATA_DISABLED") or "true"
    with patched_environ({"AWS_EC2_METADATA_DISABLED": imds}):
        return boto3.session.Session().get_credentials() is not None


@contextmanager
def aws_for_run(needs_aws: bool, announce: Callable[[str], None]) -> Iterator[AwsConfig]:
    """The AwsConfig of one run: the configured AWS, or an embedded moto for the run."""
    if not needs_aws or aws_configured():
        yield AwsConfig()
        return
    with local_aws() as config:
        announce(f"no AWS endpoint or credentials configured: running against an embedded "
                 f"moto server at {config.endpoint_url} for this run")
        yield config


__all__ = ["LOCAL_BUCKET", "LocalCloud", "aws_configured", "aws_for_run", "local_aws",
           "local_serverless"]
