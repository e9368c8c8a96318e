"""Predict every candidate: time (p50, p95), cost, memory, the 15-minute limit.

Shapes with one part per stage (data, pipeline, ``groups x stages`` hybrid) are all
predicted from one shared reference pass (:mod:`fsd_inference.predict.trace`), so
dozens of them cost little more than one; ``neuron`` candidates go through ``fsd
predict``'s own path (partition, exact per-layer counts), one reference pass each.
Ranking uses few Monte Carlo draws; :func:`evaluate` with more draws re-predicts the
winner.

A one-stage shape is first predicted in one block (every task runs all its layers in
one invocation: the fewest invocations and loads); when its predicted invocation is
longer than :data:`INVOCATION_BUDGET_S` it is cut into as many blocks as needed. A
shape with stages runs in one block (the Plan step's rule), so a too-long one is
refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import scipy.sparse as sp

from fsd_inference.model.base import NetworkSource
from fsd_inference.model.network import Network, materialise
from fsd_inference.planner.candidates import (
    FULL_VCPU_MB,
    INVOCATION_BUDGET_S,
    Candidate,
    memory_options,
)
from fsd_inference.predict.document import build_document
from fsd_inference.predict.params import ServiceModel
from fsd_inference.predict.predictor import PredictOptions, predict
from fsd_inference.predict.sampled import sampled_trace
from fsd_inference.predict.shaped_predict import (
    ShapeOptions,
    predict_shape,
    shape_memory_mb,
    wanted_blocks,
)
from fsd_inference.predict.trace import Trace, trace_run
from fsd_inference.strategy import Shape
from fsd_inference.strategy.memory import task_memory_mb

# The blocks are encoded once, as one frame each, under an execution id of the real length
# (frames are re-cut per message limit by the predictor)
TRACE_EXECUTION = "fsd-20260101-000000-000000"


@dataclass(frozen=True)
class Settings:
    """What every candidate shares."""

    channels: tuple[str, ...] = ("object", "queue")  # those the planner ranks
    memory_mb: int | None = None  # None: the planner tries memory_options
    arch: str = "arm64"
    region: str | None = None
    dtype: str = "float64"
    partition: str = "hypergraph"
    seed: int = 0
    draws: int = 50
    message_limit: int = 1024 * 1024
    sample_rows: int | None = None  # None: trace every row; else predict/sampled.py


@dataclass(frozen=True)
class Evaluated:
    candidate: Candidate
    shape: Shape
    memory_mb: int
    needed_mb: float
    layers_per_block: int | None  # None: the Plan step's default (neuron)
    p50: float
    p95: float
    cost_usd: float
    invocation_s: float  # longest predicted invocation (mean over draws)
    refused: str | None = None
    detail: Any = None  # the prediction behind it (ShapedPrediction or a document)

    def options(self) -> dict[str, int | str | None]:
        """The ``fsd infer`` / request options that run this plan."""
        c = self.candidate
        return {"strategy": c.strategy, "workers": c.workers, "stages": c.stages,
                "groups": c.groups, "microbatches": self.shape.microbatches,
                "channel": c.channel,
                "layers_per_block": self.layers_per_block, "memory_mb": self.memory_mb}


def _refused(candidate: Candidate, shape: Shape, needed: float, why: str) -> Evaluated:
    nan = math.nan
    return Evaluated(candidate, shape, 0, needed, None, nan, nan, nan, nan, why)


def trace_for(network: NetworkSource, inputs: sp.csr_matrix, shapes: list[Shape], settings: Settings
              ) -> Trace:
    keys = [key for shape in shapes for key in wanted_blocks(shape, int(inputs.shape[0]))]
    if settings.sample_rows is not None:
        return sampled_trace(network, inputs, settings.dtype, keys, TRACE_EXECUTION, 1 << 40,
                             settings.sample_rows)
    return trace_run(network, inputs, settings.dtype, keys, TRACE_EXECUTION, 1 << 40)


def evaluate_shaped(trace: Trace, candidate: Candidate, shape: Shape, settings: Settings,
                    model: ServiceModel, draws: int) -> list[Evaluated]:
    needed = shape_memory_mb(trace, shape)
    sizes = memory_options(needed, settings.memory_mb)
    if not sizes:
        limit = settings.memory_mb or 10_240
        return [_refused(candidate, shape, needed,
                         f"a task needs about {math.ceil(needed):,} MB, the function has "
                         f"{limit:,} MB: more stages (or neuron parts) would split the model")]
    out = []
    for memory in sizes:
        options = ShapeOptions(channel=candidate.channel or "queue", memory_mb=memory,
                               arch=settings.arch,
                               message_limit=settings.message_limit, draws=draws,
                               seed=settings.seed, region=settings.region,
                               layers_per_block=shape.depth)
        prediction = predict_shape(trace, shape, options, model)
        longest = float(prediction.invocations.max())
        if longest > INVOCATION_BUDGET_S and len(shape.stages) == 1:
            blocks = math.ceil(float(prediction.invocations.sum(axis=1).max())
                               / INVOCATION_BUDGET_S)
            options = replace(options, layers_per_block=math.ceil(shape.depth / blocks))
            prediction = predict_shape(trace, shape, options, model)
            longest = float(prediction.invocations.max())
        refused = None
        if longest > INVOCATION_BUDGET_S:
            refused = (f"an invocation would run about {longest:,.0f} s (Lambda stops at "
                       f"900 s; kept under {INVOCATION_BUDGET_S:.0f} s for the tails)")
        out.append(Evaluated(candidate, shape, memory, needed,
                             prediction.layout.layers_per_block, prediction.quantile(0.5),
                             prediction.quantile(0.95), float(prediction.cost["total_usd"]),
                             longest, refused, prediction))
    return out


def evaluate_neuron(network: Network, inputs: sp.csr_matrix, candidate: Candidate,
                    shape: Shape, settings: Settings, model: ServiceModel, draws: int
                    ) -> Evaluated:
    memory = settings.memory_mb or FULL_VCPU_MB
    options = PredictOptions(workers=candidate.workers, channel=candidate.channel or "queue",
                             memory_mb=memory, arch=settings.arch,
                             message_limit=settings.message_limit,
                             partition=settings.partition, seed=settings.seed,
                             dtype=settings.dtype, draws=draws)
    prediction = predict(network, inputs, options, model)
    needed = task_memory_mb(shape, network.neurons,
                            int(prediction.plan.work.sum(axis=0).max()),
                            int(inputs.shape[0]), settings.dtype)
    document = build_document(prediction, settings.region)
    predicted = document["predicted"]
    longest = max(max(w["invocations_s"]) for w in predicted["per_worker"])
    refused = None
    if needed > memory:
        refused = f"a worker needs about {needed:,.0f} MB, the function has {memory:,} MB"
    elif longest > INVOCATION_BUDGET_S:
        refused = f"an invocation would run about {longest:,.0f} s: more layers per block"
    return Evaluated(candidate, shape, memory, needed, prediction.deployment.layers_per_block,
                     predicted["time_s"]["p50"], predicted["time_s"]["p95"],
                     float(predicted["cost"]["total_usd"]), longest, refused, document)


def evaluate(network: NetworkSource, inputs: sp.csr_matrix, candidates: list[Candidate],
             settings: Settings, model: ServiceModel, draws: int | None = None,
             trace: Trace | None = None) -> tuple[list[Evaluated], Trace | None]:
    """Every candidate at every memory size it may use (see the module docstring)."""
    draws = draws or settings.draws
    depth, batch = network.depth, int(inputs.shape[0])
    shapes = {c: c.shape(depth, batch) for c in candidates}
    shaped = [c for c in candidates if all(s.parts == 1 for s in shapes[c].stages)]
    if shaped and trace is None:
        trace = trace_for(network, inputs, [shapes[c] for c in shaped], settings)
    out: list[Evaluated] = []
    for candidate in candidates:
        if candidate in shaped:
            assert trace is not None
            out += evaluate_shaped(trace, candidate, shapes[candidate], settings, model, draws)
        elif candidate.strategy != "neuron":
            out.append(_refused(candidate, shapes[candidate], math.nan,
                                "hybrid shapes with neuron parts inside a stage are not "
                                "predicted yet"))
        else:
            whole = network if isinstance(network, Network) else materialise(network)
            out.append(evaluate_neuron(whole, inputs, candidate, shapes[candidate],
                                       settings, model, draws))
    return out, trace
