"""``"strategy": "auto"`` in a request: the Plan step asks the planner, then plans its choice.

The planner (fsd_inference.planner) ranks data, pipeline and hybrid shapes by predicted
cost or latency. Inside the Plan step it works within what the deployment fixes: every
worker has the stack's ``WorkerMemory`` (so each shape is predicted at that size only),
at most the request's ``workers`` tasks (a required field, bounded by ``MaxWorkers``),
the request's channel if it names one (else both are ranked). Its reference pass runs
over a sample of :data:`~fsd_inference.predict.sampled.DEFAULT_SAMPLE_ROWS` rows, not the
whole batch (predict/sampled.py), so planning costs seconds even where the batch's whole
compute would take minutes; the figures it records are marked as estimates.

When nothing without a per-layer exchange fits the workers' memory (a model too large
for one function, and stages not enough), the step falls back to ``neuron`` over the
request's workers without predicting it: a neuron prediction partitions the network and
counts every block, which belongs in ``fsd plan --strategies neuron``, not on the run's
critical path. The record says so.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import scipy.sparse as sp

from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.cloud.errors import RequestError
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.cost import price_regions
from fsd_inference.model.base import NetworkSource
from fsd_inference.planner import Constraints, NoFeasiblePlan, PlanResult, Settings, plan_job
from fsd_inference.planner.choose import describe
from fsd_inference.predict.params import load_service_model
from fsd_inference.predict.sampled import DEFAULT_SAMPLE_ROWS

RANK_DRAWS = 50
FALLBACK = "neuron"


def plan_for_deployment(network: NetworkSource, inputs: sp.csr_matrix,
                        settings: CloudSettings, *, workers: int, channel: str | None,
                        constraints: Constraints, dtype: str = "float64",
                        message_limit: int = 1024 * 1024) -> PlanResult:
    """The planner within a deployment's limits (see the module docstring): what ``auto``
    chooses in the Plan step, and what ``fsd run`` shows after its demo. ``channel``: an
    AWS one is the only one ranked; None, or a local one (memory: ``fsd infer``'s tasks,
    predicted as if on AWS), ranks both. Raises NoFeasiblePlan."""
    region = settings.aws.region if settings.aws.region in price_regions() else None
    planner_settings = Settings(
        channels=(channel,) if channel in AWS_TRANSPORTS else tuple(sorted(AWS_TRANSPORTS)),
        memory_mb=settings.worker_memory_mb, arch=settings.arch, region=region, dtype=dtype,
        draws=RANK_DRAWS, message_limit=message_limit, sample_rows=DEFAULT_SAMPLE_ROWS)
    return plan_job(network, inputs, constraints, planner_settings, load_service_model("aws"),
                    workers, neuron_fallback=False)


def resolve_auto_request(request: Any, network: NetworkSource, inputs: sp.csr_matrix,
                         settings: CloudSettings) -> tuple[Any, dict[str, Any]]:
    """``request`` (a PlanRequest whose strategy is auto) with the planner's choice filled
    in, and the record of the choice for the manifest and the run's notes."""
    started = time.perf_counter()
    try:
        result = plan_for_deployment(
            network, inputs, settings, workers=request.workers,
            channel=request.channel if request.channel_named else None,
            constraints=Constraints(request.objective, request.deadline_s, request.budget_usd),
            dtype=request.dtype, message_limit=request.message_limit)
    except NoFeasiblePlan as exc:
        if request.deadline_s is not None or request.budget_usd is not None:
            # the user's constraint, not the memory: name it
            field = "deadline_s" if request.deadline_s is not None else "budget_usd"
            raise RequestError(field, exc.reason) from exc
        record: dict[str, Any] = {"chosen": f"{FALLBACK} x{request.workers}", "predicted": None,
                  "why": f"no data, pipeline or hybrid plan fits: {exc.reason}; the model "
                         f"is split over {request.workers} workers exchanging every layer "
                         f"(not predicted here: fsd plan --strategies neuron does)",
                  "seconds": time.perf_counter() - started}
        return msgspec.structs.replace(request, strategy=FALLBACK), record
    chosen = result.chosen
    options = chosen.options()
    layers_per_block = request.layers_per_block
    if layers_per_block is None and len(chosen.shape.stages) == 1:
        layers_per_block = chosen.layers_per_block
    resolved = msgspec.structs.replace(
        request, strategy=chosen.candidate.strategy, workers=chosen.candidate.workers,
        stages=options["stages"], groups=options["groups"],
        microbatches=options["microbatches"], layers_per_block=layers_per_block,
        channel=request.channel if request.channel_named else
        chosen.candidate.channel or request.channel)
    record = {
        "chosen": describe(chosen), "options": options, "why": result.why,
        "objective": request.objective,
        "predicted": {"p50_s": chosen.p50, "p95_s": chosen.p95, "cost_usd": chosen.cost_usd,
                      "sampled_rows": min(DEFAULT_SAMPLE_ROWS, int(inputs.shape[0])),
                      "service_model": "aws"},
        "plans_ranked": len(result.ranked), "plans_predicted": len(result.evaluated),
        "seconds": time.perf_counter() - started,
    }
    return resolved, record
