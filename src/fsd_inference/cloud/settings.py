"""Deployment settings of the serverless application: argument > environment > default.

template.yaml sets these variables on every function from its Parameters, so one
``sam deploy --parameter-overrides`` changes them; locally they default to the values
below. The AWS side (endpoint, region, bucket, queue prefix) is :class:`AwsConfig`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fsd_inference.channels.base import MiB
from fsd_inference.config import AwsConfig
from fsd_inference.exceptions import ConfigError

ENV_MAX_WORKERS = "FSD_MAX_WORKERS"
ENV_MESSAGE_LIMIT = "FSD_MESSAGE_LIMIT"
ENV_LAYERS_PER_BLOCK = "FSD_LAYERS_PER_BLOCK"
ENV_INLINE_MAP_LIMIT = "FSD_INLINE_MAP_LIMIT"
ENV_CHANNEL = "FSD_CHANNEL"
ENV_PARTITION = "FSD_PARTITION"
ENV_LAMBDA_ARCH = "FSD_LAMBDA_ARCH"
ENV_SCRATCH_DIR = "FSD_SCRATCH_DIR"
ENV_WORKER_MEMORY = "FSD_WORKER_MEMORY_MB"
# Set by the Lambda runtime for the running function.
ENV_LAMBDA_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"

DEFAULT_MAX_WORKERS = 64
DEFAULT_LAYERS_PER_BLOCK = 20  # see cloud/history.py for the arithmetic behind it
# Step Functions runs at most 40 inline Map iterations at once; all P workers of a block
# must run together (they wait on each other), so more than 40 need a Distributed Map.
DEFAULT_INLINE_MAP_LIMIT = 40
DEFAULT_CHANNEL = "queue"
DEFAULT_PARTITION = "hypergraph"
DEFAULT_ARCH = "arm64"
DEFAULT_WORKER_MEMORY_MB = 2048
ARCHITECTURES = ("arm64", "x86_64")


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def _str_env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class CloudSettings:
    aws: AwsConfig = field(default_factory=AwsConfig)
    max_workers: int = field(default_factory=lambda: _int_env(ENV_MAX_WORKERS,
                                                              DEFAULT_MAX_WORKERS))
    message_limit: int = field(default_factory=lambda: _int_env(ENV_MESSAGE_LIMIT, MiB))
    layers_per_block: int = field(default_factory=lambda: _int_env(
        ENV_LAYERS_PER_BLOCK, DEFAULT_LAYERS_PER_BLOCK))
    inline_map_limit: int = field(default_factory=lambda: _int_env(
        ENV_INLINE_MAP_LIMIT, DEFAULT_INLINE_MAP_LIMIT))
    channel: str = field(default_factory=lambda: _str_env(ENV_CHANNEL, DEFAULT_CHANNEL))
    partition: str = field(default_factory=lambda: _str_env(ENV_PARTITION, DEFAULT_PARTITION))
    arch: str = field(default_factory=lambda: _str_env(ENV_LAMBDA_ARCH, DEFAULT_ARCH))
    # The cost model's memory for invocations that did not record theirs (local runs).
    worker_memory_mb: int = field(default_factory=lambda: _int_env(
        ENV_WORKER_MEMORY, DEFAULT_WORKER_MEMORY_MB))
    scratch_dir: Path = field(default_factory=lambda: Path(
        _str_env(ENV_SCRATCH_DIR, tempfile.gettempdir())))
    # Where the Plan keeps partitions between runs besides the bucket's plans/: None on
    # Lambda (its /tmp does not outlive the container), the cache directory locally.
    partition_cache: Path | None = None

    def __post_init__(self) -> None:
        for name, value in (("max_workers", self.max_workers),
                            ("layers_per_block", self.layers_per_block),
                            ("inline_map_limit", self.inline_map_limit),
                            ("message_limit", self.message_limit),
                            ("worker_memory_mb", self.worker_memory_mb)):
            if value < 1:
                raise ConfigError(f"setting {name} must be >= 1, got {value}")
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"{ENV_LAMBDA_ARCH}={self.arch!r}: choose one of "
                              f"{', '.join(ARCHITECTURES)}")

    @property
    def bucket(self) -> str:
        """The application's bucket; every step needs one."""
        if not self.aws.bucket:
            raise ConfigError("FSD_BUCKET is not set: the serverless steps keep shards, "
                              "checkpoints and results in that bucket")
        return self.aws.bucket


def function_memory_mb(default: int = 0) -> int:
    """The running Lambda function's memory size (0 outside Lambda unless ``default``)."""
    return _int_env(ENV_LAMBDA_MEMORY, default)
