"""The small state every step receives: what a run is, and how to reach its channel.

This travels through Step Functions (the Plan's result, every Map item, Gather and
Cleanup input), so it holds a few scalars and never data: shards, inputs and
activations are in S3 under :class:`~fsd_inference.cloud.layout.RunLayout`. Everything
a worker needs to rebuild the execution's transport is here (execution id, workers,
channel name, message limit, receive timeout) plus its own environment (AwsConfig).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any, get_args

from fsd_inference.channels import ChannelConfig, Transport, transport_class
from fsd_inference.cloud.history import MapMode
from fsd_inference.cloud.layout import RunLayout, block_range
from fsd_inference.config import AwsConfig
from fsd_inference.constants import DEFAULT_PARTS
from fsd_inference.exceptions import ConfigError


@dataclass(frozen=True)
class RunInfo:
    execution: str  # run id (cloud.layout.run_id of the Step Functions execution name)
    bucket: str
    workers: int
    channel: str
    message_limit: int
    receive_timeout_s: float
    dtype: str
    neurons: int
    depth: int
    batch: int
    layers_per_block: int
    blocks: int
    map: MapMode
    model: str  # fingerprint
    parts: int = DEFAULT_PARTS  # row parts per layer in the worker loop (worker.py)

    def __post_init__(self) -> None:
        if self.map not in get_args(MapMode):
            raise ConfigError(f"run.map must be one of {get_args(MapMode)}, not {self.map!r}")
        if self.blocks != -(-self.depth // self.layers_per_block):
            raise ConfigError(f"run.blocks {self.blocks} does not match {self.depth} layers "
                              f"in blocks of {self.layers_per_block}")

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.execution)

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    def layers(self, block: int) -> tuple[int, int]:
        return block_range(block, self.layers_per_block, self.depth)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prefix": self.prefix}

    @classmethod
    def from_dict(cls, data: Any) -> RunInfo:
        """Parse the ``run`` object of a state payload; a clear error for anything off."""
        if not isinstance(data, dict):
            raise ConfigError(f"the event's 'run' must be an object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is not MISSING:
                    continue
                raise ConfigError(f"the event's run is missing {f.name!r}")
            value = data[f.name]
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"run.{f.name} must be {kind.__name__}, got {value!r}")
            values[f.name] = value
        return cls(**values)

    def channel_config(self, aws: AwsConfig | None = None) -> ChannelConfig:
        aws = aws or AwsConfig()
        if aws.bucket != self.bucket:
            aws = replace(aws, bucket=self.bucket)  # spilled payloads go to the run's bucket
        return ChannelConfig(max_message_bytes=self.message_limit,
                             receive_timeout_s=self.receive_timeout_s, aws=aws)


def build_transport(run: RunInfo, aws: AwsConfig | None = None) -> Transport:
    """The execution's transport, rebuilt from the state payload and this environment."""
    return transport_class(run.channel)(run.execution, run.workers, run.channel_config(aws))
