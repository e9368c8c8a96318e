"""Filter, rank, choose, and say why.

Objectives: ``cost`` ranks by predicted cost (then p50), ``latency`` by predicted p50
(then cost). Constraints: ``deadline`` against the p95 (a deadline is a promise, so the
tail counts), ``budget`` against the cost. A plan refused for memory or the 15-minute
limit never ranks. The winner is predicted again with the full number of draws, so the
figures shown for it are ``fsd predict``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fsd_inference.exceptions import FsdError
from fsd_inference.planner.evaluate import Evaluated


class NoFeasiblePlan(FsdError):
    """No candidate meets the constraints; says which constraint and the closest plan."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Constraints:
    objective: str = "cost"
    deadline_s: float | None = None
    budget_usd: float | None = None


def _key(objective: str) -> Callable[[Evaluated], tuple[float, float]]:
    if objective == "latency":
        return lambda e: (e.p50, e.cost_usd)
    return lambda e: (e.cost_usd, e.p50)


def rank(evaluated: list[Evaluated], constraints: Constraints) -> list[Evaluated]:
    """The feasible plans, best first; NoFeasiblePlan when there is none."""
    fits = [e for e in evaluated if e.refused is None]
    if not fits:
        reasons = sorted({e.refused or "" for e in evaluated})
        raise NoFeasiblePlan(f"no plan fits Lambda's limits: {'; '.join(reasons)[:300]}")
    within = fits
    if constraints.deadline_s is not None:
        within = [e for e in within if e.p95 <= constraints.deadline_s]
        if not within:
            best = min(fits, key=lambda e: e.p95)
            raise NoFeasiblePlan(
                f"no plan meets the deadline of {constraints.deadline_s:g} s (p95): the "
                f"fastest, {describe(best)}, is predicted at {best.p95:.1f} s")
    if constraints.budget_usd is not None:
        affordable = [e for e in within if e.cost_usd <= constraints.budget_usd]
        if not affordable:
            best = min(within, key=lambda e: e.cost_usd)
            raise NoFeasiblePlan(
                f"no plan {'meeting the deadline ' if constraints.deadline_s else ''}costs "
                f"at most ${constraints.budget_usd:g}: the cheapest, {describe(best)}, is "
                f"predicted at ${best.cost_usd:.4f}")
        within = affordable
    return sorted(within, key=_key(constraints.objective))


def describe(e: Evaluated) -> str:
    """One plan in a few words."""
    c, shape = e.candidate, e.shape
    if c.strategy == "data":
        text = f"data x{c.workers}"
    elif c.strategy == "pipeline":
        text = f"pipeline {len(shape.stages)} stages x {shape.microbatches} micro-batches"
    elif c.strategy == "hybrid":
        text = (f"hybrid {shape.groups} groups x {len(shape.stages)} stages x "
                f"{shape.microbatches} micro-batches")
    else:
        text = f"neuron x{c.workers}"
    over = f" over {c.channel}" if c.channel else ""
    return f"{text}{over} at {e.memory_mb:,} MB"


def why(chosen: Evaluated, ranked: list[Evaluated], constraints: Constraints,
        model_mb: float) -> str:
    """One line: what made the choice, against the runner-up, and what the shape buys."""
    objective = constraints.objective
    first = ranked[0]  # the chosen plan's ranking figures: same draws as the others'
    others = [e for e in ranked if e.candidate != first.candidate]  # another shape
    if objective == "latency":
        head = f"fastest of {len(ranked)} feasible plans (p50 {first.p50:.1f} s"
        versus = (f"; next shape {describe(others[0])} at {others[0].p50:.1f} s"
                  if others else "")
    else:
        head = f"cheapest of {len(ranked)} feasible plans (${first.cost_usd:.5f}"
        versus = (f"; next shape {describe(others[0])} at ${others[0].cost_usd:.5f}"
                  if others else "")
    c, shape = chosen.candidate, chosen.shape
    if c.strategy == "data":
        reason = (f"no exchange at all: each task holds the whole {model_mb:,.0f} MB model "
                  f"and 1/{c.workers} of the rows")
    elif c.strategy == "pipeline":
        crossings = len(shape.stages) - 1
        reason = (f"each stage holds 1/{len(shape.stages)} of the model and messages cross "
                  f"only {crossings} stage {'boundary' if crossings == 1 else 'boundaries'} "
                  f"per micro-batch")
    elif c.strategy == "hybrid":
        reason = (f"{shape.groups} row groups share nothing and each is a "
                  f"{len(shape.stages)}-stage pipeline")
    else:
        reason = f"the model split over {c.workers} workers exchanging every layer"
    return f"{head}{versus}): {reason}"
