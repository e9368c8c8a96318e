"""A generic task graph: what the time model evaluates, whatever the strategy.

This is the seam between a distribution strategy and the time model. A *builder* turns a
plan's exact counts into a :class:`TaskGraph` (``neuron.py`` for today's per-layer
exchange, ``published.py`` for the published system; data, pipeline and hybrid plans
get builders of their own); :mod:`fsd_inference.predict.engine` samples it. The engine
knows nothing about layers, SQS or S3, only these semantics:

A *task* (one Lambda worker) runs steps ``0 .. S-1`` in order. Step ``s`` of task ``t``::

    start   = end of step s-1 (step 0: the launch; a barrier step: the latest end of
              step s-1 over all tasks, plus this task's launch work)
    pre     CPU work first (encoding what it sends, slicing)
    jobs    its outgoing API calls; job j may start ``release[j]`` seconds after the step
            starts (the CPU that produces it), and runs on one of the task's ``senders``
            threads in submission order (threads carry over between steps); every
            message leaves when its job completes
    local   CPU work it can do before it needs anything from others; it starts after
            ``pre``, or after all of its own jobs completed when ``wait_sends`` is set
    receive the messages addressed to (t, s) are collected by the receive policy
            (:mod:`~fsd_inference.predict.receivers`): calls, batching and waits
    post    CPU work once everything arrived (multiply, activate)
    flush   with ``flush`` set, the step waits for its own jobs to complete
    tail    end-of-step work (a checkpoint written at a block's end)

A message sent in step s is received in step s (a pipeline stage's step i sends what its
step i-1 produced, so any step-to-step dependency is a message inside one step). The
makespan is ``before`` + the latest end of the last step + ``after``: the longest path
through this graph, sampled over the latency distributions.

Every duration is a :class:`Work`: fixed seconds, API calls (by the name of a latency in
the service model, and how many per item), and bytes over one connection's bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Calls = tuple[tuple[str, np.ndarray], ...]


@dataclass(frozen=True)
class Work:
    """Time spent per item: ``seconds`` + sampled API calls + ``bytes`` / bandwidth."""

    seconds: np.ndarray
    calls: Calls = ()
    bytes: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.asarray(self.seconds).size)

    @classmethod
    def zero(cls, n: int) -> Work:
        return cls(np.zeros(n))


@dataclass(frozen=True)
class Jobs:
    """A step's outgoing API work, sorted by task then submission order."""

    task: np.ndarray  # (J,) owner
    release: np.ndarray  # (J,) seconds after the owner's step start
    work: Work  # (J,) service time of each job

    def __post_init__(self) -> None:
        if self.task.size and np.any(np.diff(self.task) < 0):
            raise ValueError("jobs must be sorted by task")

    @property
    def rank(self) -> np.ndarray:
        """Submission order of each job within its task (0, 1, ...)."""
        if not self.task.size:
            return np.zeros(0, dtype=np.int64)
        first = np.flatnonzero(np.r_[True, np.diff(self.task) != 0])
        counts = np.diff(np.r_[first, self.task.size])
        return np.arange(self.task.size) - np.repeat(first, counts)


@dataclass(frozen=True)
class Messages:
    """A step's messages: which job carries each, to whom, and the receiver's work."""

    job: np.ndarray  # (M,) index into the step's jobs
    dst: np.ndarray  # (M,) receiving task
    receive: Work  # (M,) receiver-side I/O per message (transfer, a GET it needs)
    cpu: np.ndarray  # (M,) receiver CPU per message (decoding, SDK); one at a time
    transit: str | None = None  # latency between leaving and being receivable


@dataclass(frozen=True)
class Step:
    pre: Work
    local: Work
    post: Work
    jobs: Jobs
    messages: Messages
    wait_sends: bool = False
    flush: bool = False
    tail: Work | None = None
    barrier: Work | None = None  # launch work per task after a global barrier


@dataclass(frozen=True)
class Receiver:
    """How tasks collect messages (name -> policy in receivers.py) and its parameters."""

    policy: str
    call: tuple[str, ...]  # latencies of one receive call (summed)
    batch: int = 10  # messages one call returns at most
    wait_s: float = 1.0  # longest wait of one call that finds nothing
    options: dict[str, float] = field(default_factory=dict)
    call_cpu: float = 0.0  # the caller's CPU per call (SDK)


@dataclass(frozen=True)
class TaskGraph:
    tasks: int
    steps: tuple[Step, ...]
    receiver: Receiver
    senders: int  # sender threads per task
    bandwidth: float  # bytes per second of one connection
    launch: Work  # (T,) before step 0
    before: Work  # (1,) before anything (plan step, state machine)
    after: Work  # (1,) after the last task ends (gather, cleanup)
    labels: dict[str, str] = field(default_factory=dict)
