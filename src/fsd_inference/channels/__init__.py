"""Communication channels: name -> transport class table."""

from __future__ import annotations

from fsd_inference.channels.base import Channel, ChannelConfig, ChannelError, Transport
from fsd_inference.channels.memory import MemoryTransport
from fsd_inference.channels.null import NullTransport
from fsd_inference.channels.s3 import ObjectTransport
from fsd_inference.channels.sqs import QueueTransport
from fsd_inference.exceptions import ConfigError

TRANSPORTS: dict[str, type[Transport]] = {
    MemoryTransport.name: MemoryTransport,
    QueueTransport.name: QueueTransport,
    ObjectTransport.name: ObjectTransport,
    NullTransport.name: NullTransport,
}

# Channels that talk to AWS (or the embedded emulator fsd infer starts when none is set up).
AWS_TRANSPORTS = frozenset({QueueTransport.name, ObjectTransport.name})
# What a run whose tasks never exchange anything uses, whatever was asked for.
NO_EXCHANGE = NullTransport.name


def transport_class(name: str) -> type[Transport]:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown channel {name!r}; choose one of {', '.join(sorted(TRANSPORTS))}"
        ) from None


__all__ = ["AWS_TRANSPORTS", "NO_EXCHANGE", "TRANSPORTS", "Channel", "ChannelConfig",
           "ChannelError", "Transport", "transport_class"]
