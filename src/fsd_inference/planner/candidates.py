"""The plans the planner considers: strategies x sizes x memory, within Lambda's limits.

- ``data``: P row groups, P in 1, 2, 4, ... (every task holds the whole model);
- ``pipeline``: S stages of consecutive layers, S in 2, 4, 8, 16 (4 micro-batches per
  stage, compile_shape's default);
- ``hybrid``: G row groups x S stages (one part each), G in 2, 4, 8, ... and S as above;
- ``neuron``: P workers exchanging every layer, P in 8, 16, 32, ... (the published
  design; its prediction partitions and counts every block, so it is the slow one).

Every shape that exchanges is a candidate once per channel (queue: SQS with S3 for what
exceeds a message; object: S3 alone): which is cheaper or faster depends on how many
messages cross and how large they are, so the planner ranks both rather than being told.
A data shape exchanges nothing, so its channel is None.

Powers of two keep the list short (a few dozen plans) while covering every scale up to
``max_workers``; a user who wants another size runs ``fsd predict`` on it. Memory sizes:
the smallest that fits the largest task, and the standard steps above it up to one full
vCPU's 1,769 MB (the worker loop uses one core, so more memory buys no speed; the cost
objective usually wants the smallest that fits, the latency objective one vCPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.exceptions import ConfigError
from fsd_inference.strategy import STRATEGIES, Shape, compile_shape

MIN_LAMBDA_MB = 128
MAX_LAMBDA_MB = 10_240
FULL_VCPU_MB = 1769
MEMORY_STEPS = (512, 1024, FULL_VCPU_MB)
NEURON_MIN_WORKERS = 8
# More stages than this buy little: each boundary costs every micro-batch a message and
# the pipeline fills and drains over S - 1 steps, while 16 stages already cut a model
# 16-fold (65536 x 120: about 190 MB per stage).
MAX_STAGES = 16
# Lambda's 15-minute limit, with room for the tails the mean does not show: a plan whose
# predicted invocation (mean over draws) is longer is cut into more blocks, or refused.
INVOCATION_LIMIT_S = 900.0
INVOCATION_BUDGET_S = 600.0


@dataclass(frozen=True)
class Candidate:
    strategy: str
    workers: int  # tasks
    stages: int | None = None
    groups: int | None = None
    microbatches: int | None = None
    channel: str | None = None  # None: the shape exchanges nothing

    def shape(self, depth: int, batch: int) -> Shape:
        return compile_shape(self.strategy, self.workers, depth, batch, stages=self.stages,
                             groups=self.groups, microbatches=self.microbatches)

    def label(self) -> str:
        """Short, and the options that reproduce it."""
        parts = [f"--strategy {self.strategy}", f"--workers {self.workers}"]
        for name in ("stages", "groups", "microbatches", "channel"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"--{name} {value}")
        return " ".join(parts)


def powers(low: int, high: int) -> list[int]:
    out, value = [], low
    while value <= high:
        out.append(value)
        value *= 2
    return out


def enumerate_candidates(depth: int, batch: int, max_workers: int,
                         strategies: tuple[str, ...] = STRATEGIES,
                         channels: tuple[str, ...] = tuple(sorted(AWS_TRANSPORTS))
                         ) -> list[Candidate]:
    """Every candidate whose shape compiles (see the module docstring)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    unknown += [c for c in channels if c not in AWS_TRANSPORTS]
    if unknown:
        raise ConfigError(f"unknown strategy or channel {unknown[0]!r}; choose from "
                          f"{', '.join(STRATEGIES)} and {', '.join(sorted(AWS_TRANSPORTS))}")
    if not channels:
        raise ConfigError("the planner needs at least one channel to consider")
    found: list[Candidate] = []
    if "data" in strategies:
        found += [Candidate("data", p) for p in powers(1, min(max_workers, batch))]
    stages = powers(2, min(max_workers, depth, MAX_STAGES))
    for channel in channels:
        if "pipeline" in strategies:
            found += [Candidate("pipeline", s, stages=s, channel=channel) for s in stages]
        if "hybrid" in strategies:
            found += [Candidate("hybrid", g * s, stages=s, groups=g, channel=channel)
                      for g in powers(2, max_workers) for s in stages if g * s <= max_workers]
        if "neuron" in strategies:
            found += [Candidate("neuron", p, channel=channel)
                      for p in powers(NEURON_MIN_WORKERS, max_workers)]
    usable = []
    for candidate in found:
        try:
            candidate.shape(depth, batch)
        except ConfigError:
            continue  # too many groups or micro-batches for this batch
        usable.append(candidate)
    return usable


def memory_options(needed_mb: float, fixed: int | None) -> list[int]:
    """Memory sizes to try for a task needing ``needed_mb`` (empty: nothing fits)."""
    if fixed is not None:
        return [fixed] if needed_mb <= fixed else []
    if needed_mb > MAX_LAMBDA_MB:
        return []
    smallest = max(MIN_LAMBDA_MB, -(-int(needed_mb) // 64) * 64)
    steps = [m for m in MEMORY_STEPS if m > smallest]
    return [smallest, *steps] if smallest <= FULL_VCPU_MB else [smallest]
