"""What each channel puts on the wire for the blocks of a layer: exact API calls and bytes.

Given one layer's encoded blocks (:class:`~fsd_inference.predict.counts.LayerTraffic`),
a :class:`Wire` says, per message, which API calls the sender makes and what they bill,
how many bytes go up and come down, and which calls the receiver makes for it that do
not depend on timing. It uses the channels' own rules (``spills``, ``pack_batches``,
``Pointer``, ``spill_key``, ``billed_sqs_requests``, the chunk limits), so a change
there changes the prediction.

Not here, because they depend on timing: SQS ReceiveMessage / DeleteMessageBatch calls
and the object channel's GET probes and LISTs (the receive policies model them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from fsd_inference.aws import SQS_BILLING_CHUNK, billed_sqs_requests
from fsd_inference.channels.s3 import UNCHUNKED
from fsd_inference.channels.sqs import Pointer, body_length, pack_batches, spill_key, spills
from fsd_inference.predict.counts import LayerTraffic

SEND = "SQS.SendMessageBatch"
PUT = "S3.PutObject"
GET = "S3.GetObject"
SHA256_HEX = 64


@dataclass(frozen=True)
class LayerWire:
    """Per message of a layer (aligned with its LayerTraffic)."""

    send_calls: dict[str, np.ndarray]  # API -> calls the sender makes for the message
    billed: dict[str, np.ndarray]  # API -> billed requests of those calls
    up_bytes: np.ndarray  # bytes the sender uploads (message bodies, spilled objects)
    receive_calls: dict[str, np.ndarray] = field(default_factory=dict)  # exact receiver calls
    down_bytes: np.ndarray | None = None  # bytes the receiver downloads


@dataclass(frozen=True)
class WireOptions:
    message_limit: int  # the channel's size limit (queue: SQS message size)
    execution: str
    bucket: str


class Wire(ABC):
    """One channel's wire accounting (name -> class table: WIRES)."""

    name = ""
    uses_aws = True
    # APIs the receiver calls once per message, in line (their latency is on its path);
    # the object channel's GETs are its probes, charged per round by the receive policy
    receive_latency_apis: frozenset[str] = frozenset()

    @abstractmethod
    def chunk_limit(self, options: WireOptions) -> int:
        """The frame size limit Channel.send cuts blocks at, for this channel."""

    @abstractmethod
    def account(self, k: int, traffic: LayerTraffic, options: WireOptions) -> LayerWire:
        """Layer ``k``'s calls and bytes, per message."""


class MemoryWire(Wire):
    name = "memory"
    uses_aws = False

    def chunk_limit(self, options: WireOptions) -> int:
        return options.message_limit

    def account(self, k: int, traffic: LayerTraffic, options: WireOptions) -> LayerWire:
        return LayerWire({}, {}, traffic.frame_bytes, {}, traffic.frame_bytes)


class QueueWire(Wire):
    """SQS: one base64 body per frame, batches of up to 10 within the limit, S3 spill."""

    name = "queue"
    receive_latency_apis = frozenset({GET})  # following a spill pointer

    def chunk_limit(self, options: WireOptions) -> int:
        return UNCHUNKED

    def account(self, k: int, traffic: LayerTraffic, options: WireOptions) -> LayerWire:
        limit = options.message_limit
        n = traffic.src.size
        sends = np.ones(n)
        puts = np.zeros(n)
        body = 4 * -(-traffic.frame_bytes // 3)
        billed = np.maximum(1, -(-body // SQS_BILLING_CHUNK)).astype(np.float64)
        up = body.astype(np.float64)
        # the common case (one frame that fits) is vectorised above; the rest per message
        odd = np.flatnonzero((traffic.frames != 1) | (body > limit))
        for i in odd:
            frames = self._frame_sizes(traffic, int(i))
            bodies = []
            puts[i] = 0
            up[i] = 0.0
            for chunk, size in enumerate(frames):
                if spills(size, limit):
                    pointer = Pointer(options.bucket, spill_key(
                        options.execution, k, int(traffic.dst[i]), int(traffic.src[i]), chunk),
                        size, "0" * SHA256_HEX, k, int(traffic.src[i]))
                    bodies.append(len(pointer.to_body()))
                    puts[i] += 1
                    up[i] += size
                else:
                    bodies.append(body_length(size))
            batches = pack_batches(bodies, limit)
            sends[i] = len(batches)
            billed[i] = sum(billed_sqs_requests(sum(bodies[b.start:b.stop])) for b in batches)
            up[i] += sum(bodies)
        return LayerWire({SEND: sends, PUT: puts}, {SEND: billed}, up, {GET: puts.copy()},
                         up.copy())

    @staticmethod
    def _frame_sizes(traffic: LayerTraffic, i: int) -> list[int]:
        count = int(traffic.frames[i])
        full = (int(traffic.frame_bytes[i]) - int(traffic.last_frame[i])) // max(1, count - 1)
        return [full] * (count - 1) + [int(traffic.last_frame[i])]


class ObjectWire(Wire):
    """S3 alone: one object per frame, one GET per frame found."""

    name = "object"

    def chunk_limit(self, options: WireOptions) -> int:
        return UNCHUNKED

    def account(self, k: int, traffic: LayerTraffic, options: WireOptions) -> LayerWire:
        frames = traffic.frames.astype(np.float64)
        return LayerWire({PUT: frames}, {}, traffic.frame_bytes.astype(np.float64),
                         {GET: frames.copy()}, traffic.frame_bytes.astype(np.float64))


WIRES: dict[str, type[Wire]] = {w.name: w for w in (MemoryWire, QueueWire, ObjectWire)}
