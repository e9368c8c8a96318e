"""How a task collects one step's messages: receive policies, vectorised over draws.

Each policy gets the step's arrivals (when each message became receivable), the
receiver-side work per message, when each task starts receiving and the sampled cost of
one receive call, and returns when each task has everything, how many calls it made and
how many of those came back empty. All arrays are ``(draws, tasks)`` or, per message,
``(draws, tasks, n)`` sorted by arrival (:class:`Inbox`).

- ``longpoll`` (SQS long polling): a call returns as soon as a message is receivable,
  with every message receivable at that moment up to ``batch``; a call that finds
  nothing waits, and returns empty after ``wait_s``.
- ``backoff`` (the object channel, GET/LIST probes): an idle receiver probes at once and
  then after delays doubling from ``first_s`` to ``max_s`` (jittered, 0.75 on average),
  restarting after every success; a probe round fetches up to ``batch`` objects.
- ``interval`` (the published object channel): a LIST every call + ``sleep_s`` from the
  start of receiving, the sleep following every LIST (the last one too); each listed
  object is fetched on its own thread (their I/O overlaps, their CPU does not).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fsd_inference.predict.graph import Receiver

BACKOFF_JITTER_MEAN = 0.75  # channels/s3.py: delay * (0.5 + random() / 2)
BACKOFF_STEPS = 4096


@dataclass(frozen=True)
class Inbox:
    """One step's messages per receiving task, sorted by arrival; padding is +inf."""

    arrival: np.ndarray  # (D, T, n)
    io: np.ndarray  # (D, T, n) receiver I/O seconds per message (may overlap)
    cpu: np.ndarray  # (D, T, n) receiver CPU seconds per message (one at a time)
    count: np.ndarray  # (T,) messages per task

    @property
    def cost(self) -> np.ndarray:
        return np.asarray(self.io + self.cpu)

    @classmethod
    def build(cls, arrival: np.ndarray, io: np.ndarray, cpu: np.ndarray, dst: np.ndarray,
              tasks: int) -> Inbox:
        draws = arrival.shape[0]
        count = np.bincount(dst, minlength=tasks)
        width = int(count.max()) if dst.size else 0
        if width == 0:
            empty = np.zeros((draws, tasks, 0))
            return cls(empty, empty, empty, count)
        order = np.argsort(dst, kind="stable")
        grouped = dst[order]
        first = np.concatenate(([0], np.cumsum(count)[:-1]))
        slot = np.arange(dst.size) - np.repeat(first, count)
        # one sort per draw by (receiver, arrival): receivers' groups keep their places, so
        # every draw's k-th message of a group lands in the same padded cell
        times = arrival[:, order]
        span = float(np.nanmax(times) - np.nanmin(times)) + 1.0
        by_time = np.argsort(times + grouped * span, axis=1)
        messages = order[by_time]

        def place(values: np.ndarray, pad: float) -> np.ndarray:
            out = np.full((draws, tasks, width), pad)
            out[:, grouped, slot] = np.take_along_axis(
                np.broadcast_to(values, arrival.shape), messages, 1)
            return out

        return cls(place(arrival, np.inf), place(io, 0.0), place(cpu, 0.0), count)


@dataclass(frozen=True)
class Collected:
    done: np.ndarray  # (D, T) when the task has every message
    calls: np.ndarray  # (D, T) receive calls that returned something
    empty: np.ndarray  # (D, T) calls (probes) that returned nothing


class ReceivePolicy(ABC):
    name = ""

    @abstractmethod
    def collect(self, box: Inbox, start: np.ndarray, call: np.ndarray,
                receiver: Receiver) -> Collected:
        """When each task has all of its messages, given it starts receiving at ``start``
        and one call costs ``call``."""


class Greedy(ReceivePolicy):
    """A receiver that takes, call after call, everything already there (up to
    ``batch``); when nothing is there it finds the next arrival as :meth:`discover` says."""

    @abstractmethod
    def discover(self, gap: np.ndarray, end: np.ndarray, call: np.ndarray,
                 receiver: Receiver) -> tuple[np.ndarray, np.ndarray]:
        """When an idle receiver (idle since ``end``, the message arriving ``gap`` later)
        finds the message, and how many calls it made meanwhile that found nothing."""

    def collect(self, box: Inbox, start: np.ndarray, call: np.ndarray,
                receiver: Receiver) -> Collected:
        end = start.copy()
        snapshot = np.full_like(start, -np.inf)
        taken = np.full(start.shape, receiver.batch)
        calls = np.zeros_like(start)
        empty = np.zeros_like(start)
        for i in range(box.arrival.shape[2]):
            arrival, cost = box.arrival[..., i], box.cost[..., i]
            valid = np.isfinite(arrival)
            join = valid & (taken < receiver.batch) & (arrival <= snapshot)
            new = valid & ~join
            gap = np.where(new, np.maximum(arrival - end, 0.0), 0.0)
            found, probes = self.discover(gap, end, call, receiver)
            empty += np.where(new, probes, 0.0)
            snapshot = np.where(new, np.maximum(found, arrival), snapshot)
            end = np.where(new, snapshot + call + cost, np.where(join, end + cost, end))
            taken = np.where(new, 1, np.where(join, taken + 1, taken))
            calls += new
        return Collected(end, calls, empty)


class LongPoll(Greedy):
    name = "longpoll"

    def discover(self, gap: np.ndarray, end: np.ndarray, call: np.ndarray,
                 receiver: Receiver) -> tuple[np.ndarray, np.ndarray]:
        # a waiting long poll returns as soon as the message is there; each full wait
        # before that returned empty
        return end + gap, np.floor(gap / receiver.wait_s)


class Backoff(Greedy):
    name = "backoff"

    def discover(self, gap: np.ndarray, end: np.ndarray, call: np.ndarray,
                 receiver: Receiver) -> tuple[np.ndarray, np.ndarray]:
        first = receiver.options.get("first_s", 0.02)
        ceiling = receiver.options.get("max_s", 0.5)
        delays = np.minimum(ceiling, first * 2.0 ** np.minimum(np.arange(BACKOFF_STEPS), 60))
        schedule = np.concatenate(([0.0], np.cumsum(delays * BACKOFF_JITTER_MEAN)))
        # probes before the one that finds it (each probe also costs a call)
        probes = np.searchsorted(schedule, gap, side="left")
        found = end + schedule[np.minimum(probes, schedule.size - 1)] + probes * call
        return found, probes.astype(np.float64)


class Interval(ReceivePolicy):
    name = "interval"

    def collect(self, box: Inbox, start: np.ndarray, call: np.ndarray,
                receiver: Receiver) -> Collected:
        period = call + receiver.options.get("sleep_s", 0.1)
        late = np.maximum(box.arrival - start[..., None], 0.0)
        valid = np.isfinite(late)
        rounds = np.where(valid, np.ceil(late / period[..., None]), 0.0)
        listed = start[..., None] + rounds * period[..., None] + call[..., None]
        # GETs run on threads (their I/O overlaps), their CPU does not
        fetched = np.where(valid, listed + box.io, -np.inf)
        done = (fetched + box.cpu).max(axis=2, initial=-np.inf)
        first = np.where(valid, fetched, np.inf).min(axis=2, initial=np.inf)
        done = np.maximum(done, np.where(np.isfinite(first), first + box.cpu.sum(axis=2),
                                         -np.inf))
        last_round = rounds.max(axis=2, initial=0.0)
        done = np.maximum(done, start + (last_round + 1) * period)
        lists = last_round + 1
        return Collected(done, lists, np.zeros_like(start))


RECEIVERS: dict[str, type[ReceivePolicy]] = {
    LongPoll.name: LongPoll,
    Backoff.name: Backoff,
    Interval.name: Interval,
}
