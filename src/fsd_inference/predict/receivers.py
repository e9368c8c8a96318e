"""How a task collects one step's messages: receive policies, vectorised over draws.

Each policy gets the step's arrivals (when each message became receivable), the
receiver-side work per message, when each task starts receiving and the sampled cost of
one receive call, and returns when each task has everything, how many calls it made and
how many of those came back empty. All arrays are ``(draws, tasks)`` or, per message,
``(n, draws, tasks)`` sorted by arrival (:class:`Inbox`).

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fsd_inference.predict.graph import Receiver

BACKOFF_JITTER_MEAN = 0.75  # channels/s3.py: delay * (0.5 + random() / 2)
BACKOFF_STEPS = 4096


@dataclass(frozen=True)
class Inbox:
    """One step's messages per receiving task, sorted by arrival; padding is +inf.

    Slot-major, ``(n, D, T)``: the receive loops walk the k-th message of every inbox
    at once, and a contiguous ``(D, T)`` slab per slot is several times faster to
    combine than a strided one. ``arrival`` and ``cost`` (I/O + CPU) are placed at once;
    ``io`` and ``cpu`` apart only for a policy that asks for them.
    """

    arrival: np.ndarray  # (n, D, T)
    cost: np.ndarray  # (n, D, T) receiver I/O + CPU seconds per message
    count: np.ndarray  # (T,) messages per task
    _io: np.ndarray  # (D, M) unplaced
    _cpu: np.ndarray  # (M,) unplaced
    _place: Callable[[np.ndarray, float], np.ndarray]

    @cached_property
    def io(self) -> np.ndarray:
        """(n, D, T) receiver I/O seconds per message (may overlap)."""
        return self._place(self._io, 0.0)

    @cached_property
    def cpu(self) -> np.ndarray:
        """(n, D, T) receiver CPU seconds per message (one at a time)."""
        return self._place(self._cpu, 0.0)

    @classmethod
    def build(cls, arrival: np.ndarray, io: np.ndarray, cpu: np.ndarray, dst: np.ndarray,
              tasks: int) -> Inbox:
        draws = arrival.shape[0]
        count = np.bincount(dst, minlength=tasks)
        width = int(count.max()) if dst.size else 0
        if width == 0:
            empty = np.zeros((0, draws, tasks))
            return cls(empty, empty, count, io, cpu, lambda values, pad: empty)
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
            out = np.full((width, draws, tasks), pad)
            out[slot, :, grouped] = np.take_along_axis(
                np.broadcast_to(values, arrival.shape), messages, 1).T
            return out

        return cls(place(arrival, np.inf), place(io + cpu, 0.0), count, io, cpu, place)


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
        # tasks by inbox size, largest first: the k-th message's walk touches only the
        # tasks that have k messages, a prefix in this order (views, not masks)
        perm = np.argsort(-box.count, kind="stable")
        sizes = box.count[perm]
        end = start[:, perm]
        call = call[:, perm]
        snapshot = np.full_like(end, -np.inf)
        taken = np.full(end.shape, receiver.batch)
        calls = np.zeros_like(end)
        empty = np.zeros_like(end)
        for i in range(box.arrival.shape[0]):
            n = int(np.count_nonzero(sizes > i))
            arrival, cost = box.arrival[i][:, perm[:n]], box.cost[i][:, perm[:n]]
            end_i, snap_i, taken_i = end[:, :n], snapshot[:, :n], taken[:, :n]
            join = (taken_i < receiver.batch) & (arrival <= snap_i)
            new = ~join
            gap = np.where(new, np.maximum(arrival - end_i, 0.0), 0.0)
            found, probes = self.discover(gap, end_i, call[:, :n], receiver)
            empty[:, :n] += np.where(new, probes, 0.0)
            snap_i = np.where(new, np.maximum(found, arrival), snap_i)
            end[:, :n] = np.where(new, snap_i + call[:, :n] + cost, end_i + cost)
            snapshot[:, :n] = snap_i
            taken[:, :n] = np.where(new, 1, taken_i + 1)
            calls[:, :n] += new
        back = np.empty_like(perm)
        back[perm] = np.arange(perm.size)
        return Collected(end[:, back], calls[:, back], empty[:, back])


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
        late = np.maximum(box.arrival - start, 0.0)
        valid = np.isfinite(late)
        rounds = np.where(valid, np.ceil(late / period), 0.0)
        listed = start + rounds * period + call
        # GETs run on threads (their I/O overlaps), their CPU does not
        fetched = np.where(valid, listed + box.io, -np.inf)
        done = (fetched + box.cpu).max(axis=0, initial=-np.inf)
        first = np.where(valid, fetched, np.inf).min(axis=0, initial=np.inf)
        done = np.maximum(done, np.where(np.isfinite(first), first + box.cpu.sum(axis=0),
                                         -np.inf))
        last_round = rounds.max(axis=0, initial=0.0)
        done = np.maximum(done, start + (last_round + 1) * period)
        lists = last_round + 1
        return Collected(done, lists, np.zeros_like(start))


RECEIVERS: dict[str, type[ReceivePolicy]] = {
    LongPoll.name: LongPoll,
    Backoff.name: Backoff,
    Interval.name: Interval,
}
