"""Monte Carlo evaluation of a :class:`~fsd_inference.predict.graph.TaskGraph`.

Every draw samples every API call's latency from the service model, then walks the steps
in order, all tasks and all draws at once (numpy arrays of ``(draws, tasks)``): the
dependency structure is kept exactly (a task's step waits for its last message; senders
queue on their threads; barriers wait for the slowest task), so tails add up along the
longest path instead of being averaged away. The result keeps the makespan of every
draw (its quantiles are the prediction) and, per task and step, the mean time spent
computing, sending, waiting and in other work (storage, launches): the breakdown and
the timeline plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsd_inference.predict.graph import Jobs, TaskGraph, Work
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.receivers import RECEIVERS, Inbox

DEFAULT_DRAWS = 300


@dataclass(frozen=True)
class Timeline:
    """Means over draws, ``(tasks, steps)`` each, in seconds."""

    start: np.ndarray
    end: np.ndarray
    compute: np.ndarray
    send: np.ndarray
    wait: np.ndarray
    other: np.ndarray


@dataclass(frozen=True)
class Simulation:
    makespan: np.ndarray  # (draws,)
    timeline: Timeline
    gate: np.ndarray  # (steps,) mean barrier instant (NaN where a step has no barrier)
    calls: np.ndarray  # (tasks, steps) mean receive calls that returned messages
    empty: np.ndarray  # (tasks, steps) mean receive calls (probes) that returned nothing
    before: float  # mean seconds before the first launch
    after: float  # mean seconds after the last task ended

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.makespan, q))


class Sampler:
    """Draws the duration of a :class:`Work` for every draw and item."""

    def __init__(self, model: ServiceModel, bandwidth: float, draws: int,
                 rng: np.random.Generator) -> None:
        self.model = model
        self.bandwidth = bandwidth
        self.draws = draws
        self.rng = rng

    def __call__(self, work: Work) -> np.ndarray:
        n = work.size
        total = np.broadcast_to(np.asarray(work.seconds, dtype=np.float64),
                                (self.draws, n)).copy()
        for name, counts in work.calls:
            counts = np.broadcast_to(np.asarray(counts, dtype=np.float64), (n,))
            if counts.any():
                total += self.model.latency(name).total(self.rng, counts, self.draws)
        if work.bytes is not None:
            total += np.asarray(work.bytes, dtype=np.float64) / self.bandwidth
        return total

    def latency_sum(self, names: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        total = np.zeros(shape)
        for name in names:
            total += self.model.latency(name).sample(self.rng, shape)
        return total


def _send(jobs: Jobs, release: np.ndarray, service: np.ndarray, free: np.ndarray
          ) -> np.ndarray:
    """Departure of every job: FIFO on its task's threads.

    ``free`` is ``(K, D, T)``: when each of a task's K threads is next free, kept sorted
    along K (threads are interchangeable, so only the sorted times matter): a job takes
    thread 0, the earliest free, and its finish time is inserted back in order (it is
    never earlier than the time it replaces). Updated in place.
    """
    depart = np.empty_like(release)
    rank = jobs.rank
    for r in range(int(rank.max()) + 1 if rank.size else 0):
        chosen = np.flatnonzero(rank == r)
        owners = jobs.task[chosen]
        x = np.maximum(release[:, chosen], free[0][:, owners]) + service[:, chosen]
        depart[:, chosen] = x
        for k in range(1, free.shape[0]):
            later = free[k][:, owners]
            free[k - 1][:, owners] = np.minimum(later, x)
            x = np.maximum(later, x)
        free[-1][:, owners] = x
    return depart


def _per_task_max(values: np.ndarray, task: np.ndarray, tasks: int, floor: np.ndarray
                  ) -> np.ndarray:
    out = floor.copy()
    if task.size:
        starts = np.flatnonzero(np.r_[True, np.diff(task) != 0])
        out[:, task[starts]] = np.maximum(out[:, task[starts]],
                                          np.maximum.reduceat(values, starts, axis=1))
    return out


def simulate(graph: TaskGraph, model: ServiceModel, draws: int = DEFAULT_DRAWS,
             seed: int = 0) -> Simulation:
    """Sample the graph ``draws`` times (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sample = Sampler(model, graph.bandwidth, draws, rng)
    policy = RECEIVERS[graph.receiver.policy]()
    tasks, steps = graph.tasks, len(graph.steps)
    sums = {k: np.zeros((tasks, steps)) for k in ("start", "end", "compute", "send", "wait",
                                                   "other")}
    calls = np.zeros((tasks, steps))
    empty = np.zeros((tasks, steps))
    gate_mean = np.full(steps, np.nan)
    before = sample(graph.before)[:, 0]
    launch = sample(graph.launch)
    end = before[:, None] + launch
    free = np.full((max(1, graph.senders), draws, tasks), -np.inf)
    for s, step in enumerate(graph.steps):
        other = np.zeros((draws, tasks))
        if step.barrier is not None:
            gate = end.max(axis=1, keepdims=True)
            gate_mean[s] = float(gate.mean())
            started = sample(step.barrier)
            start = gate + started
            other += started
        else:
            start = end
        pre_end = start + sample(step.pre)
        jobs, messages = step.jobs, step.messages
        release = start[:, jobs.task] + jobs.release
        depart = _send(jobs, release, sample(jobs.work), free)
        local_start = pre_end
        if step.wait_sends:
            local_start = np.maximum(pre_end, _per_task_max(depart, jobs.task, tasks, pre_end))
        local = sample(step.local)
        receive_start = local_start + local
        arrival = depart[:, messages.job]
        if messages.transit is not None:
            arrival = arrival + model.latency(messages.transit).sample(rng, arrival.shape)
        box = Inbox.build(arrival, sample(messages.receive), messages.cpu, messages.dst, tasks)
        call = sample.latency_sum(graph.receiver.call, (draws, tasks)) + graph.receiver.call_cpu
        got = policy.collect(box, receive_start, call, graph.receiver)
        done = np.maximum(got.done, receive_start)
        post = sample(step.post)
        end = done + post
        sent = local_start - pre_end
        if step.flush:
            flushed = np.maximum(end, free[-1])
            sent = sent + flushed - end
            end = flushed
        if step.tail is not None:
            tail = sample(step.tail)
            other += tail
            end = end + tail
        sums["start"][:, s] = start.mean(axis=0)
        sums["end"][:, s] = end.mean(axis=0)
        sums["compute"][:, s] = (pre_end - start + local + post).mean(axis=0)
        sums["send"][:, s] = sent.mean(axis=0)
        sums["wait"][:, s] = (done - receive_start).mean(axis=0)
        sums["other"][:, s] = other.mean(axis=0)
        calls[:, s] = got.calls.mean(axis=0)
        empty[:, s] = got.empty.mean(axis=0)
    after = sample(graph.after)[:, 0]
    makespan = end.max(axis=1) + after
    return Simulation(makespan, Timeline(**sums), gate_mean, calls, empty,
                      float(before.mean()), float(after.mean()))
