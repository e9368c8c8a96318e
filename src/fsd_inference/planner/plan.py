"""One planning job end to end: enumerate, predict cheaply, rank, predict the winner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from fsd_inference.model.base import NetworkSource
from fsd_inference.planner.candidates import enumerate_candidates
from fsd_inference.planner.choose import Constraints, NoFeasiblePlan, rank, why
from fsd_inference.planner.evaluate import Evaluated, Settings, evaluate
from fsd_inference.predict.engine import DEFAULT_DRAWS
from fsd_inference.predict.params import ServiceModel

# Neuron plans are predicted when asked for, or when no other plan fits: their prediction
# partitions the network and counts every block of every layer (minutes per plan at 1024
# x 120, 10,000 inputs), and the exchange every layer is what the other shapes avoid.
DEFAULT_STRATEGIES = ("data", "pipeline", "hybrid")


@dataclass
class PlanResult:
    constraints: Constraints
    settings: Settings
    evaluated: list[Evaluated]  # every candidate x memory, refused ones included
    ranked: list[Evaluated]  # feasible and within the constraints, best first
    chosen: Evaluated  # ranked[0] predicted again with the full draws
    why: str
    seconds: dict[str, float] = field(default_factory=dict)


def model_megabytes(network: NetworkSource, dtype: str) -> float:
    """The weights in memory (CSR: 4-byte index + value per edge)."""
    return network.edges * (4 + np.dtype(dtype).itemsize) / 2**20


def plan_job(network: NetworkSource, inputs: sp.csr_matrix, constraints: Constraints,
             settings: Settings, model: ServiceModel, max_workers: int,
             strategies: tuple[str, ...] = DEFAULT_STRATEGIES, final_draws: int = DEFAULT_DRAWS,
             neuron_fallback: bool = True) -> PlanResult:
    """Rank every candidate plan and choose (see fsd_inference.planner.choose).
    ``neuron_fallback``: predict neuron plans when nothing else fits (minutes each); the
    Plan step says no and falls back without predicting (cloud/auto_plan.py)."""
    started = time.perf_counter()
    candidates = enumerate_candidates(network.depth, int(inputs.shape[0]), max_workers,
                                      strategies, settings.channels)
    if not candidates:
        raise NoFeasiblePlan(f"no candidate plan with at most {max_workers} workers for "
                             f"{inputs.shape[0]} inputs and strategies {', '.join(strategies)}")
    evaluated, trace = evaluate(network, inputs, candidates, settings, model)
    if neuron_fallback and "neuron" not in strategies and all(e.refused for e in evaluated):
        # nothing without neuron exchange fits: the one case the published design is for
        fallback = enumerate_candidates(network.depth, int(inputs.shape[0]), max_workers,
                                        ("neuron",), settings.channels)
        evaluated += evaluate(network, inputs, fallback, settings, model, trace=trace)[0]
    ranked = rank(evaluated, constraints)
    ranked_at = time.perf_counter()
    best = ranked[0]
    final, _ = evaluate(network, inputs, [best.candidate],
                        replace(settings, memory_mb=best.memory_mb), model, final_draws, trace)
    chosen = final[0]
    line = why(chosen, ranked, constraints, model_megabytes(network, settings.dtype))
    return PlanResult(constraints, settings, evaluated, ranked, chosen, line,
                      {"rank_s": ranked_at - started,
                       "final_s": time.perf_counter() - ranked_at})
