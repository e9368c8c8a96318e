"""Configuration resolved argument > environment > default (frozen, picklable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fsd_inference.constants import ENV_CACHE_DIR

ENV_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_REGION = "AWS_REGION"
ENV_DEFAULT_REGION = "AWS_DEFAULT_REGION"
ENV_BUCKET = "FSD_BUCKET"
ENV_QUEUE_PREFIX = "FSD_QUEUE_PREFIX"
ENV_STACK = "FSD_STACK"
DEFAULT_REGION = "us-east-1"
DEFAULT_QUEUE_PREFIX = "fsd"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


@dataclass(frozen=True)
class AwsConfig:
    """Where the AWS APIs are: real AWS by default, any emulator through ``endpoint_url``.

    ``bucket`` holds shards, inputs, checkpoints, spilled payloads and results;
    ``queue_prefix`` starts every queue name an execution creates (the template scopes
    the functions' SQS permissions to it); ``stack`` (the template sets it) tags them.
    """

    endpoint_url: str | None = field(default_factory=lambda: _env(ENV_ENDPOINT))
    region: str = field(
        default_factory=lambda: _env(ENV_REGION) or _env(ENV_DEFAULT_REGION) or DEFAULT_REGION
    )
    bucket: str | None = field(default_factory=lambda: _env(ENV_BUCKET))
    queue_prefix: str = field(
        default_factory=lambda: _env(ENV_QUEUE_PREFIX) or DEFAULT_QUEUE_PREFIX
    )
    stack: str | None = field(default_factory=lambda: _env(ENV_STACK))


def cache_dir() -> Path:
    """Local cache (demo network, partitions): $FSD_CACHE_DIR or ./.cache/fsd-inference."""
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.cwd() / ".cache" / "fsd-inference")
