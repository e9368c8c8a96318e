"""The planner: which strategy, shape and memory to run a job with, by predicted cost or
latency (DESIGN section 2a). ``fsd plan --objective`` prints its ranking; ``--strategy
auto`` runs its choice."""

from __future__ import annotations

from fsd_inference.constants import OBJECTIVES
from fsd_inference.planner.choose import Constraints, NoFeasiblePlan
from fsd_inference.planner.evaluate import Evaluated, Settings
from fsd_inference.planner.plan import PlanResult, plan_job

__all__ = ["OBJECTIVES", "Constraints", "Evaluated", "NoFeasiblePlan", "PlanResult",
           "Settings", "plan_job"]
