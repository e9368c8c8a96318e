"""A fault-injecting wrapper around any channel: duplicates, reorders, delays, drops.

Used by the tests to show the worker loop is correct under what SQS really does
(at-least-once, unordered delivery) and that a lost message ends in a ChannelTimeout
naming the worker, layer and missing source rather than a hang.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fsd_inference.channels.base import Channel, ChannelConfig, Transport
from fsd_inference.channels.codec import decode_frame
from fsd_inference.metrics import WorkerMetrics


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0  # probability that a frame is delivered twice
    delay: float = 0.0  # probability that a frame is held back ...
    delay_s: float = 0.05  # ... for up to this long (so later frames overtake it)
    shuffle: bool = False  # deliver each put's frames in random order
    drop: frozenset[tuple[int, int, int]] = frozenset()  # (layer, source, target) never sent
    seed: int = 0


class FaultyChannel(Channel):
    """Delegates transport to ``inner`` but mangles delivery according to ``faults``."""

    name = "faulty"

    def __init__(self, inner: Channel, faults: Faults) -> None:
        super().__init__(inner.execution, inner.worker, inner.config, inner.metrics)
        self._inner = inner
        self._faults = faults
        self._rng = np.random.default_rng([faults.seed, inner.worker])
        self._timers: list[threading.Timer] = []

    def _put(self, target: int, frames: list[bytes]) -> None:
        out: list[bytes] = []
        for frame in frames:
            header, _ = decode_frame(frame)
            if (header.layer, header.source, header.target) in self._faults.drop:
                continue
            out.append(frame)
            if self._rng.random() < self._faults.duplicate:
                out.append(frame)
        if self._faults.shuffle:
            self._rng.shuffle(out)
        for frame in out:
            if self._rng.random() < self._faults.delay:
                wait = float(self._rng.uniform(0, self._faults.delay_s))
                timer = threading.Timer(wait, self._inner._put, args=(target, [frame]))
                timer.daemon = True
                timer.start()
                self._timers.append(timer)
            else:
                self._inner._put(target, [frame])

    def _get(self, timeout: float) -> list[bytes]:
        return self._inner._get(timeout)

    def flush(self) -> None:
        for timer in self._timers:
            timer.join()
        self._timers.clear()
        self._inner.flush()

    def close(self) -> None:
        self.flush()
        self._inner.close()


class FaultyTransport(Transport):
    """Wraps another transport; every worker's channel becomes a FaultyChannel."""

    name = "faulty"

    def __init__(self, inner: Transport, faults: Faults) -> None:
        super().__init__(inner.execution, inner.workers, inner.config)
        self.inner = inner
        self.faults = faults

    def setup(self) -> None:
        self.inner.setup()

    def teardown(self) -> None:
        self.inner.teardown()

    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        return FaultyChannel(self.inner.channel(worker, metrics), self.faults)


def faulty_factory(inner: type[Transport], faults: Faults
                   ) -> Callable[[str, int, ChannelConfig], Transport]:
    """A ``transport_factory`` for run_inference that wraps ``inner`` with ``faults``."""

    def build(execution: str, workers: int, config: ChannelConfig) -> Transport:
        return FaultyTransport(inner(execution, workers, config), faults)

    return build
