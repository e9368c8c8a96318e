"""The ``none`` channel: for runs whose tasks never talk (data parallelism).

A shape of one slot per group (strategy/shape.py) exchanges nothing, so creating queues
or a scratch prefix for it would only cost requests: the Plan picks this transport
instead. Using it to send or receive is a bug, reported as such.
"""

from __future__ import annotations

from fsd_inference.channels.base import Channel, ChannelError, Transport
from fsd_inference.metrics import WorkerMetrics


class NullChannel(Channel):
    name = "none"

    def _put(self, target: int, frames: list[bytes]) -> None:
        raise ChannelError(self.worker, 0, f"this run has no channel, yet a block was sent "
                                           f"to worker {target}")

    def _get(self, timeout: float) -> list[bytes]:
        raise ChannelError(self.worker, 0, "this run has no channel, yet a block was awaited")


class NullTransport(Transport):
    name = "none"

    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        return NullChannel(self.execution, worker, self.config, metrics)
