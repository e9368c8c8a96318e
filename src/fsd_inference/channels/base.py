"""The channel interface: point-to-point, per-layer exchange of activation blocks.

:class:`Channel` owns everything transport-independent (encoding, framing, chunking to
the size limit, reassembly, buffering of early messages, dropping duplicates, bounded
waits, traffic counters); an implementation only moves opaque frames with ``_put`` and
``_get``. :class:`Transport` is the picklable, per-execution side: it creates and
deletes what an execution needs (queues, prefixes, pipes) and builds each worker's
channel inside that worker's process.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

from fsd_inference.channels.codec import (
    Block,
    FrameError,
    FrameHeader,
    decode_body,
    decode_frame,
    encode_body,
    encode_frames,
)
from fsd_inference.config import AwsConfig
from fsd_inference.exceptions import FsdError
from fsd_inference.metrics import WorkerMetrics

MiB = 1024 * 1024


class ChannelError(FsdError):
    """A channel could not deliver or accept a message; names worker and layer."""

    def __init__(self, worker: int, layer: int, message: str) -> None:
        self.worker = worker
        self.layer = layer
        super().__init__(f"worker {worker}, layer {layer}: {message}")


class ChannelTimeout(ChannelError):
    def __init__(self, worker: int, layer: int, missing: Iterable[int], seconds: float,
                 part: int = 0) -> None:
        self.missing = sorted(missing)
        self.part = part
        what = f" (part {part})" if part else ""
        super().__init__(
            worker, layer,
            f"timed out after {seconds:g} s waiting for source worker(s) {self.missing}{what}",
        )


@dataclass(frozen=True)
class ChannelConfig:
    max_message_bytes: int = MiB  # frame size limit (SQS: 256 KiB or 1 MiB)
    receive_timeout_s: float = 120.0  # the longest a worker waits for one layer
    poll_s: float = 1.0  # longest single blocking _get
    aws: AwsConfig = field(default_factory=AwsConfig)  # used by the cloud channels only


class Channel(ABC):
    """One worker's endpoint. Not thread-safe: one worker loop drives it."""

    name: str = ""

    def __init__(self, execution: str, worker: int, config: ChannelConfig,
                 metrics: WorkerMetrics | None = None) -> None:
        self.execution = execution
        self.worker = worker
        self.config = config
        self.metrics = metrics or WorkerMetrics(worker)
        # messages are keyed by (layer, part, source); see codec.py for "part"
        self._chunks: dict[tuple[int, int, int], dict[int, bytes]] = {}
        self._ready: dict[tuple[int, int], dict[int, Block]] = {}
        self._consumed: set[tuple[int, int, int]] = set()

    # -------------------------------------------------------------- public, shared work

    def send(self, layer: int, target: int, block: Block, part: int = 0) -> None:
        frames = encode_frames(self.execution, layer, self.worker, target, encode_body(block),
                               self.config.max_message_bytes, part)
        self._put(target, frames)
        m = self.metrics.layer(layer)
        m.messages_sent += 1
        m.frames_sent += len(frames)
        m.bytes_sent += sum(len(f) for f in frames)

    def receive(self, layer: int, sources: Iterable[int], timeout: float | None = None,
                part: int = 0) -> dict[int, Block]:
        """Wait for one block from every source for ``(layer, part)``; buffer everything
        else."""
        wanted = set(sources)
        limit = self.config.receive_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            ready = self._ready.get((layer, part), {})
            if wanted <= ready.keys():
                got = {s: ready.pop(s) for s in wanted}
                if not ready:
                    self._ready.pop((layer, part), None)
                self._consumed.update((layer, part, s) for s in wanted)
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(self.worker, layer, wanted - ready.keys(), limit, part)
            for frame in self._get(min(remaining, self.config.poll_s)):
                self._accept(frame, layer)

    def flush(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Block until every send handed to the transport is out (no-op if synchronous)."""

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release clients and threads; the transport deletes shared resources."""

    # -------------------------------------------------------------- implementation hooks

    @abstractmethod
    def _put(self, target: int, frames: list[bytes]) -> None:
        """Deliver frames to ``target`` (at least once, in any order)."""

    @abstractmethod
    def _get(self, timeout: float) -> list[bytes]:
        """Frames addressed to this worker, waiting at most ``timeout`` for the first."""

    # -------------------------------------------------------------- reassembly

    def _accept(self, frame: bytes, current_layer: int) -> None:
        try:
            header, payload = decode_frame(frame)
        except FrameError as exc:
            raise ChannelError(self.worker, current_layer, f"rejected a frame: {exc}") from exc
        self._check_address(header, current_layer)
        m = self.metrics.layer(header.layer)
        m.frames_received += 1
        m.bytes_received += len(frame)
        key = header.message_key
        if key in self._consumed or \
                header.source in self._ready.get((header.layer, header.part), {}):
            m.duplicates_dropped += 1
            return
        parts = self._chunks.setdefault(key, {})
        if header.chunk in parts:
            m.duplicates_dropped += 1
            return
        parts[header.chunk] = payload
        if len(parts) < header.chunks:
            return
        del self._chunks[key]
        body = b"".join(parts[i] for i in range(header.chunks))
        try:
            block = decode_body(body)
        except FrameError as exc:
            raise ChannelError(self.worker, header.layer,
                               f"block from worker {header.source}: {exc}") from exc
        self._ready.setdefault((header.layer, header.part), {})[header.source] = block
        m.messages_received += 1

    def _check_address(self, header: FrameHeader, current_layer: int) -> None:
        if header.execution != self.execution or header.target != self.worker:
            raise ChannelError(
                self.worker, current_layer,
                f"frame for execution {header.execution!r} worker {header.target} arrived here "
                f"(execution {self.execution!r}): channels of different runs are mixed",
            )


class Transport(ABC):
    """Per-execution resources of one channel kind; picklable, so workers can build from it."""

    name: str = ""

    def __init__(self, execution: str, workers: int, config: ChannelConfig) -> None:
        self.execution = execution
        self.workers = workers
        self.config = config

    def setup(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Create the execution's resources (queues, ...)."""

    def teardown(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Delete them; safe to call twice and after a partial setup."""

    @abstractmethod
    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        """The endpoint of ``worker``; called inside the worker's process."""
