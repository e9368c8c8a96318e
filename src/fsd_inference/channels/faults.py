"""A fault-injecting wrapper around any channel: duplicates, reorders, delays, drops,
and a fixed latency per message.

Used by the tests to show the worker loop is correct under what SQS really does
(at-least-once, unordered delivery) and that a lost message ends in a ChannelTimeout
naming the worker, layer and missing source rather than a hang; and by the benchmarks
to give the memory channel a network's latency (bench/kernel.py: overlap of compute
and exchange).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
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
    latency_s: float = 0.0  # every message arrives this long after it is sent


class _Courier:
    """Delivers frames when they are due, from one thread in due order: thousands of
    delayed frames cost a heap entry each, not a thread each."""

    def __init__(self, deliver: Callable[[int, list[bytes]], None]) -> None:
        self._deliver = deliver
        self._due: list[tuple[float, int, int, list[bytes]]] = []
        self._order = itertools.count()
        self._busy = 0  # frames handed to _deliver and not yet back
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, delay_s: float, target: int, frames: list[bytes]) -> None:
        with self._cond:
            self._raise()
            entry = (time.monotonic() + delay_s, next(self._order), target, frames)
            heapq.heappush(self._due, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fsd-courier",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every scheduled frame is delivered; re-raise a delivery error."""
        with self._cond:
            while (self._due or self._busy) and self._error is None:
                self._cond.wait()
            self._raise()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                        not self._due or self._due[0][0] > time.monotonic()):
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, target, frames = heapq.heappop(self._due)
                self._busy += 1
            try:
                self._deliver(target, frames)
            except BaseException as exc:  # handed to the worker at its next send or flush
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


class FaultyChannel(Channel):
    """Delegates transport to ``inner`` but mangles delivery according to ``faults``."""

    name = "faulty"

    def __init__(self, inner: Channel, faults: Faults) -> None:
        super().__init__(inner.execution, inner.worker, inner.config, inner.metrics)
        self._inner = inner
        self._faults = faults
        self._rng = np.random.default_rng([faults.seed, inner.worker])
        self._courier = _Courier(inner._put)

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
        latency = self._faults.latency_s
        on_time: list[bytes] = []
        for frame in out:
            if self._rng.random() < self._faults.delay:
                wait = float(self._rng.uniform(0, self._faults.delay_s))
                self._courier.schedule(latency + wait, target, [frame])
            else:
                on_time.append(frame)
        if on_time and latency > 0:
            self._courier.schedule(latency, target, on_time)
        elif on_time:
            self._inner._put(target, on_time)

    def _get(self, timeout: float) -> list[bytes]:
        return self._inner._get(timeout)

    def flush(self) -> None:
        self._courier.drain()
        self._inner.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._courier.close()
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
