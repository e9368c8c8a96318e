"""In-machine channel: one multiprocessing queue per worker, same frames as the cloud.

Workers are separate OS processes, so P workers compute in parallel on the machine's
cores, and every byte a cloud channel would carry is encoded, framed and decoded here
too: traffic figures from a memory run are the figures of a cloud run.
"""

from __future__ import annotations

import multiprocessing
import queue
from multiprocessing.context import BaseContext
from typing import Any

from fsd_inference.channels.base import Channel, ChannelConfig, Transport
from fsd_inference.metrics import WorkerMetrics

DRAIN_LIMIT = 256  # frames taken per _get after the first, to amortise wake-ups


class MemoryChannel(Channel):
    name = "memory"

    def __init__(self, execution: str, worker: int, config: ChannelConfig,
                 inboxes: list[Any], metrics: WorkerMetrics | None = None) -> None:
        super().__init__(execution, worker, config, metrics)
        self._inboxes = inboxes

    def _put(self, target: int, frames: list[bytes]) -> None:
        for frame in frames:
            self._inboxes[target].put(frame)

    def _get(self, timeout: float) -> list[bytes]:
        inbox = self._inboxes[self.worker]
        try:
            frames = [inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(frames) < DRAIN_LIMIT:
            try:
                frames.append(inbox.get_nowait())
            except queue.Empty:
                break
        return frames


class MemoryTransport(Transport):
    name = "memory"

    def __init__(self, execution: str, workers: int, config: ChannelConfig,
                 context: BaseContext | None = None) -> None:
        super().__init__(execution, workers, config)
        ctx = context or multiprocessing.get_context("spawn")
        self.inboxes = [ctx.Queue() for _ in range(workers)]

    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        return MemoryChannel(self.execution, worker, self.config, self.inboxes, metrics)
