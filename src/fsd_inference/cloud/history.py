"""Step Functions accounting for inference.asl.json: history events and transitions.

A Standard execution's history holds at most 25,000 events, and every event of an
*inline* Map's iterations lands in the parent's history. Counting the states of
statemachine/inference.asl.json (a test keeps the state names below in step with it):

    fixed  ExecutionStarted 1 + Plan task 5 + Gather task 5 + Cleanup task 5
           + Done (Succeed) 2 + ExecutionSucceeded 1                         = 19
           (a Task is Entered, Scheduled, Started, Succeeded, Exited: 5)
    block  RouteBlock choice 2 + NextBlock pass 2 + MoreBlocks choice 2
      inline Map     : Entered, Started, Succeeded, Exited 4
                       + per worker: IterationStarted, IterationSucceeded + task 5 = 7
                       -> 10 + 7 P per block
      distributed Map: Entered, Started, MapRunStarted, MapRunSucceeded,
                       Succeeded, Exited 6 (iterations are child executions with
                       histories of their own)                                -> 12 per block

    events = 19 + B (10 + 7 P)   inline       events = 19 + 12 B   distributed

One Map per layer (B = L) at P = 62 and L = 120 would be 19 + 120 x 444 = 53,299 events:
over the limit, which is why workers run blocks of layers between checkpoints. With the
default of 20 layers per block, 120 layers are B = 6 blocks: 2,683 events even if
P = 62 ran inline (91 as it does, distributed), and P = 40 inline is 1,759. The plan keeps
every execution under HISTORY_BUDGET = 20,000, leaving 5,000 events for retries (a rerun
block costs another 10 + 7 P): 1,920 layers at P = 40 inline need B <= 68, so the plan
raises the default to 29 layers per block (67 blocks, 19,449 events).

Billed state transitions (Standard: one per state entered, retries included):
    4 (Plan, Gather, Cleanup, Done) + B (4 + P)  (RouteBlock, Map, NextBlock, MoreBlocks,
    and one Worker task per iteration, also for distributed child executions).
"""

from __future__ import annotations

from typing import Literal

HISTORY_LIMIT = 25_000
HISTORY_BUDGET = 20_000
MapMode = Literal["inline", "distributed"]

# State names the formulas above count; tests/unit/test_template.py checks the ASL.
FIXED_TASKS = ("Plan", "Gather", "Cleanup")
PER_BLOCK_STATES = ("RouteBlock", "NextBlock", "MoreBlocks")
MAP_STATES: dict[MapMode, str] = {"inline": "InlineBlock", "distributed": "DistributedBlock"}
WORKER_TASK = "Worker"
SUCCEED_STATE = "Done"

_FIXED_EVENTS = 1 + 5 * len(FIXED_TASKS) + 2 + 1
_TASK_EVENTS = 5
_STATE_EVENTS = 2


def history_events(workers: int, blocks: int, mode: MapMode) -> int:
    """Events in the parent execution's history for a run without retries."""
    map_events = 4 + workers * (2 + _TASK_EVENTS) if mode == "inline" else 6
    per_block = map_events + _STATE_EVENTS * len(PER_BLOCK_STATES)
    return _FIXED_EVENTS + blocks * per_block


def state_transitions(workers: int, blocks: int) -> int:
    """Billed state transitions of a run without retries (both Map modes)."""
    return len(FIXED_TASKS) + 1 + blocks * (len(PER_BLOCK_STATES) + 1 + workers)


def max_blocks(workers: int, mode: MapMode, budget: int = HISTORY_BUDGET) -> int:
    """The most blocks an execution of ``workers`` may have within ``budget`` events."""
    per_block = history_events(workers, 1, mode) - _FIXED_EVENTS
    return max(0, (budget - _FIXED_EVENTS) // per_block)


def min_layers_per_block(depth: int, workers: int, mode: MapMode,
                         budget: int = HISTORY_BUDGET) -> int:
    """The fewest layers per block that keep ``depth`` layers within ``budget`` events."""
    most = max_blocks(workers, mode, budget)
    if most < 1:
        raise ValueError(f"{workers} workers do not fit one block in {budget} history events")
    return -(-depth // most)
