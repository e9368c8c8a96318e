"""What the planner prints: the ranked table, the choice and why; and its JSON."""

from __future__ import annotations

import math
from typing import Any

from fsd_inference.planner.choose import describe
from fsd_inference.planner.evaluate import Evaluated
from fsd_inference.planner.plan import PlanResult

SHOWN = 12  # rows of the table; the JSON has them all


def best_per_shape(ranked: list[Evaluated]) -> list[Evaluated]:
    """The first (best) memory size of every candidate shape, in rank order."""
    seen: set[object] = set()
    out = []
    for e in ranked:
        if e.candidate not in seen:
            seen.add(e.candidate)
            out.append(e)
    return out


def _row(rank: str, e: Evaluated) -> str:
    return (f"{rank:>4}  {describe(e):<66} {e.candidate.workers:>5}  {e.p50:>8.1f}  "
            f"{e.p95:>8.1f}  {e.cost_usd:>10.5f}")


def table_lines(result: PlanResult) -> list[str]:
    c, s = result.constraints, result.settings
    limits = [f"deadline {c.deadline_s:g} s (p95)"] if c.deadline_s is not None else []
    limits += [f"budget ${c.budget_usd:g}"] if c.budget_usd is not None else []
    refused = [e for e in result.evaluated if e.refused]
    lines = [
        f"objective {c.objective}{'; ' + ', '.join(limits) if limits else ''}; channels "
        f"{' and '.join(s.channels)}, {s.arch}; {len(result.evaluated)} plans predicted "
        f"({len(refused)} refused, {len(result.ranked)} within the constraints), "
        f"{s.draws} draws each for ranking",
        f"{'rank':>4}  {'plan (best memory of each shape)':<66} {'tasks':>5}  {'p50 s':>8}  "
        f"{'p95 s':>8}  {'cost $':>10}",
    ]
    best = best_per_shape(result.ranked)
    lines += [_row(str(i), e) for i, e in enumerate(best[:SHOWN], start=1)]
    if len(best) > SHOWN:
        lines.append(f"      ... {len(best) - SHOWN} more shapes in the JSON")
    for e in refused[:4]:
        lines.append(f"refused: {describe(e).split(' at ')[0]}: {e.refused}")
    if len(refused) > 4:
        lines.append(f"refused: {len(refused) - 4} more (see the JSON)")
    chosen = result.chosen
    options = chosen.options()
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items()
                     if v is not None and k != "memory_mb")
    lines += [
        f"chosen: {describe(chosen)}: p50 {chosen.p50:.1f} s, p95 {chosen.p95:.1f} s, "
        f"${chosen.cost_usd:.5f} ({flags}; {DEFAULT_DRAWS_TEXT})",
        f"why: {result.why}",
    ]
    return lines


DEFAULT_DRAWS_TEXT = "predicted again with the full draws"


def _entry(e: Evaluated) -> dict[str, Any]:
    def number(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {"plan": describe(e), "options": e.options(), "shape": e.shape.to_dict(),
            "tasks": e.shape.tasks, "memory_mb": e.memory_mb, "needed_mb": number(e.needed_mb),
            "time_s": {"p50": number(e.p50), "p95": number(e.p95)},
            "cost_usd": number(e.cost_usd), "invocation_s": number(e.invocation_s),
            "refused": e.refused}


def plan_document(result: PlanResult, model: dict[str, Any]) -> dict[str, Any]:
    c = result.constraints
    return {
        "model": model,
        "objective": c.objective, "deadline_s": c.deadline_s, "budget_usd": c.budget_usd,
        "channels": list(result.settings.channels), "arch": result.settings.arch,
        "chosen": _entry(result.chosen), "why": result.why,
        "ranked": [_entry(e) for e in result.ranked],
        "refused": [_entry(e) for e in result.evaluated if e.refused],
        "seconds": result.seconds,
        "note": "predictions from fsd predict's service model (aws-model.json), not "
                "measurements; see the README's assumptions",
    }
