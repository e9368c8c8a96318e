"""An embedded moto server on loopback: a complete local AWS for the cloud channels.

``local_aws()`` starts moto's ThreadedMotoServer on 127.0.0.1 (a free port), points
this process and its children at it (AWS_ENDPOINT_URL, dummy credentials, FSD_BUCKET,
and MOTO_PORT, which moto's Step Functions interpreter uses to call Lambda), creates
the scratch bucket, yields the AwsConfig to use, and stops the server and restores the
environment afterwards. Worker processes started inside the block inherit it all.

moto is pinned (pyproject) because three throughput fixes hook its internals; each is
applied only to the pinned version. Measured (see LOCAL-AWS.md): a third of the
server's CPU went to listing moto's package folder on every request, and SQS rebuilt
every queue attribute for each received message; and every request listed its response
class's methods with ``inspect.getmembers`` (2-3% of the server in the demo).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fsd_inference.aws import s3_client
from fsd_inference.config import (
    DEFAULT_REGION,
    ENV_BUCKET,
    ENV_DEFAULT_REGION,
    ENV_ENDPOINT,
    AwsConfig,
)
from fsd_inference.exceptions import ConfigError

PINNED_MOTO = "5.2.5"
LOCAL_BUCKET = "fsd-local"
LOOPBACK = "127.0.0.1"
ANY_ADDRESS = ("0.0.0.0", "::", "")
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
QUIET_LOGGERS = {"moto": logging.WARNING, "werkzeug": logging.ERROR,
                 "moto.stepfunctions.parser": logging.CRITICAL}


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the block only."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def quiet_moto() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def speed_up_moto() -> bool:
    """Apply the measured throughput fixes to moto (pinned version only; idempotent)."""
    import moto
    from moto import backends
    from moto.core import responses
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if moto.__version__ != PINNED_MOTO:
        return False
    if not hasattr(backends.list_of_moto_modules, "cache_info"):
        # werkzeug_app calls it per request to route by Host header: list the folder once
        listing = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = functools.cache(lambda: listing)

    def valid_by_retention(self: Any, queue_name: str, message: Any) -> bool:
        # the original builds the queue's full attribute dict for every message received
        queue = self.get_queue(queue_name)
        retain_until = float(queue.message_retention_period) + message.sent_timestamp / 1000
        return bool(retain_until > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = valid_by_retention  # type: ignore[method-assign]
    methods = getattr(responses, "method_names_from_class")  # noqa: B009 - not exported
    if not hasattr(methods, "cache_info"):
        # call_action lists a response class's methods (inspect.getmembers) per request
        setattr(responses, "method_names_from_class", functools.cache(methods))  # noqa: B010
    return True


def endpoint_for(host: str, port: int) -> str:
    """The URL clients on this machine use for a server listening on ``host``."""
    reachable = LOOPBACK if host in ANY_ADDRESS else host
    return f"http://{reachable}:{port}"


def _serve(host: str, port: int) -> Any:
    """moto's ThreadedMotoServer, started; a clear error if the port is taken."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose "
                          f"another port, or 0 for any free one)") from exc
    return server


@contextmanager
def local_aws(region: str = DEFAULT_REGION, bucket: str | None = LOCAL_BUCKET,
              port: int = 0, host: str = LOOPBACK) -> Iterator[AwsConfig]:
    """Run an embedded moto server for the block; yields where it is, as an AwsConfig.

    ``bucket``: a scratch bucket to create and name in FSD_BUCKET (None: none, as when a
    deployed stack brings its own). ``host``: the address to listen on (loopback unless
    containers must reach it: ``0.0.0.0``).
    """
    quiet_moto()
    speed_up_moto()
    server = _serve(host, port)
    try:
        _, bound = server.get_host_and_port()
        endpoint = endpoint_for(host, bound)
        environment: dict[str, str | None] = {
            ENV_ENDPOINT: endpoint,
            ENV_DEFAULT_REGION: region,
            "AWS_REGION": region,
            ENV_BUCKET: bucket,
            "MOTO_PORT": str(bound),
            "AWS_SESSION_TOKEN": None,
            "AWS_PROFILE": None,
            "AWS_EC2_METADATA_DISABLED": "true",
            **DUMMY_CREDENTIALS,
        }
        with patched_environ(environment):
            config = AwsConfig(endpoint_url=endpoint, region=region, bucket=bucket)
            if bucket is not None:
                create_bucket(config, bucket)
            yield config
    finally:
        server.stop()


def create_bucket(config: AwsConfig, bucket: str) -> None:
    s3 = s3_client(config)
    try:
        if config.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
                "LocationConstraint": config.region})  # type: ignore[typeddict-item]
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
