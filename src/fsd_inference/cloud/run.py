"""The small state every step receives: what a run is, and how to reach its channel.

This travels through Step Functions (the Plan's result, every Map item, Gather and
Cleanup input), so it holds a few scalars and never data: shards, inputs and
activations are in S3 under :class:`~fsd_inference.cloud.layout.RunLayout`. Everything
a worker needs to rebuild the execution's transport is here (execution id, workers,
channel name, message limit, receive timeout) plus its own environment (AwsConfig).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec

from fsd_inference.channels import TRANSPORTS, ChannelConfig, Transport, transport_class
from fsd_inference.cloud.history import MapMode
from fsd_inference.cloud.layout import RunLayout, block_range
from fsd_inference.cloud.schema import (
    BucketName,
    Count,
    Depth,
    Fingerprint,
    MessageLimit,
    ReceiveTimeout,
    RunId,
    Workers,
    load,
    to_builtins,
)
from fsd_inference.config import AwsConfig
from fsd_inference.constants import DTYPES
from fsd_inference.strategy.shape import Shape


class RunInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Validated on every load (cloud.schema): a state that names another run's id, an
    unsafe id, a bucket or a worker count out of bounds never reaches a step."""

    execution: RunId  # cloud.layout.run_id of the Step Functions execution name
    bucket: BucketName
    workers: Workers
    channel: str
    message_limit: MessageLimit
    receive_timeout_s: ReceiveTimeout
    dtype: str
    neurons: Count
    depth: Depth
    batch: Count
    layers_per_block: Depth
    blocks: Depth
    map: MapMode
    model: Fingerprint  # the network's fingerprint
    # how the tasks split the work (strategy/shape.py); workers = shape.tasks
    shape: Shape

    def __post_init__(self) -> None:
        if self.channel not in TRANSPORTS:  # memory: local runs of the same steps
            raise ValueError(f"run.channel must be one of {sorted(TRANSPORTS)}, "
                             f"not {self.channel!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"run.dtype must be one of {list(DTYPES)}, not {self.dtype!r}")
        if self.blocks != -(-self.depth // self.layers_per_block):
            raise ValueError(f"run.blocks {self.blocks} does not match {self.depth} layers "
                             f"in blocks of {self.layers_per_block}")
        if self.shape.tasks != self.workers or self.shape.depth != self.depth:
            raise ValueError(f"run.shape ({self.shape.describe()}) does not match "
                             f"{self.workers} workers and {self.depth} layers")
        if max(self.shape.groups, self.shape.microbatches) > self.batch:
            raise ValueError(f"run.shape cuts {self.batch} rows into {self.shape.groups} "
                             f"groups of {self.shape.microbatches} micro-batches")
        if len(self.shape.stages) > 1 and self.blocks != 1:
            raise ValueError("run.shape has pipeline stages: they run all their layers in "
                             "one block")

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.execution)

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    def layers(self, block: int) -> tuple[int, int]:
        return block_range(block, self.layers_per_block, self.depth)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = to_builtins(self)
        document["shape"] = self.shape.to_dict()  # lists, as JSON reads them back
        return document

    @classmethod
    def from_dict(cls, data: Any) -> RunInfo:
        """Parse the ``run`` object of a state payload; SchemaError names what is off."""
        return load(cls, data, "the event's run")

    def channel_config(self, aws: AwsConfig | None = None) -> ChannelConfig:
        aws = aws or AwsConfig()
        if aws.bucket != self.bucket:
            aws = replace(aws, bucket=self.bucket)  # spilled payloads go to the run's bucket
        return ChannelConfig(max_message_bytes=self.message_limit,
                             receive_timeout_s=self.receive_timeout_s, aws=aws)


def build_transport(run: RunInfo, aws: AwsConfig | None = None) -> Transport:
    """The execution's transport, rebuilt from the state payload and this environment."""
    return transport_class(run.channel)(run.execution, run.workers, run.channel_config(aws))
