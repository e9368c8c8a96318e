"""Strategies -> shapes: what ``neuron``, ``data``, ``pipeline`` and ``hybrid`` mean.

- ``neuron`` (the published design): one group, one stage of all layers split over P
  workers who exchange activations every layer.
- ``data``: P groups of rows, each task the whole model; no exchange at all.
- ``pipeline``: S stages of consecutive layers (one worker each) streaming M
  micro-batches to the next stage.
- ``hybrid``: G groups x S stages x P parts, e.g. groups of neuron-parallel workers each
  taking a slice of the rows (``--groups 4 --workers 16``: 4 x 4), or pipeline stages
  that are themselves data-parallel (``--groups 4 --stages 3 --workers 12``).

``workers`` is always the number of tasks (Lambda functions per block); the others are
derived or checked against it, and every error says which option to change.
"""

from __future__ import annotations

from fsd_inference.exceptions import ConfigError
from fsd_inference.strategy.shape import Shape, Stage, split_evenly

STRATEGIES = ("neuron", "data", "pipeline", "hybrid")
AUTO = "auto"
# Micro-batches per stage a pipeline gets by default: M / (M + S - 1) of the time every
# stage is busy, 80% at 4 per stage, at the price of (S - 1) x M boundary messages.
DEFAULT_MICROBATCHES_PER_STAGE = 4


def stages_of(depth: int, count: int, parts: int) -> tuple[Stage, ...]:
    if not 1 <= count <= depth:
        raise ConfigError(f"--stages must be between 1 and the {depth} layers, got {count}")
    bounds = split_evenly(depth, count)
    return tuple(Stage(int(bounds[i]) + 1, int(bounds[i + 1]), parts) for i in range(count))


def compile_shape(strategy: str, workers: int, depth: int, batch: int, *,
                  stages: int | None = None, groups: int | None = None,
                  microbatches: int | None = None) -> Shape:
    """The shape of ``strategy`` for ``workers`` tasks on ``depth`` layers x ``batch`` rows."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if strategy == "neuron":
        _only(strategy, stages=stages, groups=groups)
        shape = Shape(strategy, 1, stages_of(depth, 1, workers), microbatches or 1)
    elif strategy == "data":
        _only(strategy, stages=stages, groups=groups)
        shape = Shape(strategy, workers, stages_of(depth, 1, 1), microbatches or 1)
    elif strategy == "pipeline":
        _only(strategy, groups=groups)
        count = stages or workers
        if count != workers:
            raise ConfigError(f"a pipeline runs one worker per stage: --stages {count} needs "
                              f"--workers {count} (or use --strategy hybrid)")
        shape = Shape(strategy, 1, stages_of(depth, count, 1),
                      microbatches or min(batch, DEFAULT_MICROBATCHES_PER_STAGE * count))
    elif strategy == "hybrid":
        g, s = groups or 1, stages or 1
        if g * s == 1 or workers % (g * s):
            raise ConfigError(f"hybrid: --workers {workers} must be a multiple of --groups "
                              f"{g} x --stages {s}, and at least one of them above 1")
        default_m = DEFAULT_MICROBATCHES_PER_STAGE * s if s > 1 else 1
        shape = Shape(strategy, g, stages_of(depth, s, workers // (g * s)),
                      microbatches or min(max(1, batch // g), default_m))
    else:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of "
                          f"{', '.join((*STRATEGIES, AUTO))}")
    _check_rows(shape, batch)
    return shape


def _only(strategy: str, **options: int | None) -> None:
    given = [name for name, value in options.items() if value not in (None, 1)]
    if given:
        raise ConfigError(f"--{given[0]} does not apply to --strategy {strategy} (use "
                          f"--strategy hybrid to combine)")


def _check_rows(shape: Shape, batch: int) -> None:
    if shape.groups > batch:
        raise ConfigError(f"{shape.groups} groups of rows but only {batch} inputs: use at "
                          f"most {batch} workers for data parallelism")
    smallest = batch // shape.groups
    if shape.microbatches > max(1, smallest):
        raise ConfigError(f"{shape.microbatches} micro-batches but the smallest group has "
                          f"{smallest} rows: use at most {max(1, smallest)}")
