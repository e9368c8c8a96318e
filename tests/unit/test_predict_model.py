"""The time model's parts against results worked out by hand: distributions, receive
policies, the engine's longest path, the parameter files, the SQS batch packing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fsd_inference.channels.sqs import MAX_BATCH_ENTRIES, pack_batches
from fsd_inference.predict.engine import simulate
from fsd_inference.predict.graph import Jobs, Messages, Receiver, Step, TaskGraph, Work
from fsd_inference.predict.params import (
    PROFILES,
    Latency,
    ParameterError,
    ServiceModel,
    load_service_model,
    parse_model,
)
from fsd_inference.predict.receivers import RECEIVERS, Inbox

MAX_FITTED = 3  # the issue allows at most three fitted global parameters


def fixed_model(**latencies: float) -> ServiceModel:
    """A service model whose latencies are constants (sigma 0): results are exact."""
    return ServiceModel("test", "test", "2026-01-01", {},
                        {name: Latency(value, 0.0) for name, value in latencies.items()})


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_packaged_figure_names_its_source_and_date(profile: str) -> None:
    model = load_service_model(profile)
    assert model.entries
    for name, entry in model.entries.items():
        assert str(entry["source"]).strip(), name
        assert entry["checked"][:2] == "20", name
    assert len(model.fitted()) <= MAX_FITTED
    for entry in model.fitted().values():
        assert len(entry["justification"]) > 50


@pytest.mark.parametrize(("change", "fragment"), [
    ({"source": ""}, "names no source"),
    ({"checked": "last week"}, "ISO date"),
    ({"fitted": True}, "justification"),
    ({"value": 1.0}, "exactly one of"),
    ({"p90": 0.001}, "below the median"),
])
def test_a_bad_entry_is_refused_by_name(change: dict[str, Any], fragment: str) -> None:
    entry = {"p50": 0.01, "p90": 0.02, "source": "a paper", "checked": "2026-01-01", **change}
    document = {"checked": "2026-01-01", "parameters": {"sqs.send": entry}}
    with pytest.raises(ParameterError, match=fragment) as error:
        parse_model(document, "model.json")
    assert "sqs.send" in str(error.value) and "model.json" in str(error.value)


def test_lognormal_matches_its_quantiles_and_sums() -> None:
    latency = Latency.from_quantiles(0.02, p90=0.05)
    rng = np.random.default_rng(1)
    draws = latency.sample(rng, (200_000,))
    assert np.median(draws) == pytest.approx(0.02, rel=0.02)
    assert np.quantile(draws, 0.9) == pytest.approx(0.05, rel=0.03)
    totals = latency.total(rng, np.array([1.0, 4.0, 16.0]), 100_000)
    assert totals.mean(axis=0) == pytest.approx(latency.mean * np.array([1, 4, 16]), rel=0.02)
    # a sum of k independent delays spreads by sqrt(k)
    ratio = totals[:, 2].std() / totals[:, 0].std()
    assert ratio == pytest.approx(4.0, rel=0.05)


# ----------------------------------------------------------------------------- receivers


def inbox(arrivals: list[float], cost: float = 0.0) -> Inbox:
    a = np.array([arrivals])
    return Inbox.build(a, np.full_like(a, cost), np.zeros_like(a), np.zeros(len(arrivals),
                                                                            dtype=int), 1)


def test_long_poll_takes_what_is_there_and_waits_for_the_rest() -> None:
    policy = RECEIVERS["longpoll"]()
    receiver = Receiver("longpoll", ("x",), batch=2, wait_s=1.0)
    # start 0, call 0.1: t=0 waits for 0.05 -> returns at 0.15 with it; 0.1 and 0.12 are
    # there by 0.15 -> one call, 0.25; 0.3 arrives later -> 0.4; 3.0 after two empty polls
    got = policy.collect(inbox([0.05, 0.1, 0.12, 0.3, 3.0]), np.zeros((1, 1)),
                         np.full((1, 1), 0.1), receiver)
    assert got.done[0, 0] == pytest.approx(3.1)
    assert got.calls[0, 0] == 4
    assert got.empty[0, 0] == 2


def test_long_poll_keeps_each_task_to_its_own_inbox() -> None:
    # tasks with 1, 2 and 0 messages (the loop walks the tasks that have a k-th message,
    # largest inbox first, and must hand each result back to its own task)
    arrival = np.array([[3.0, 0.1, 0.05]])
    box = Inbox.build(arrival, np.zeros_like(arrival), np.zeros(3), np.array([1, 0, 1]), 3)
    receiver = Receiver("longpoll", ("x",), batch=2, wait_s=1.0)
    got = RECEIVERS["longpoll"]().collect(box, np.array([[0.0, 0.0, 0.5]]),
                                          np.full((1, 3), 0.1), receiver)
    # task 1: 0.05 -> 0.15, then two empty polls and 3.0 -> 3.1; task 0: 0.1 -> 0.2;
    # task 2 has nothing to wait for and ends where it starts
    assert got.done[0] == pytest.approx([0.2, 3.1, 0.5])
    assert got.calls[0].tolist() == [1, 2, 0]
    assert got.empty[0].tolist() == [0, 2, 0]


def test_interval_lists_sleep_and_fetches_in_parallel() -> None:
    policy = RECEIVERS["interval"]()
    receiver = Receiver("interval", ("list",), options={"sleep_s": 0.1})
    # LIST 0.02 + sleep 0.1: rounds at 0, 0.12, 0.24; 0.2 is seen by the round at 0.24
    # (listed at 0.26), fetched by 0.26 + 0.05; the last sleep ends at 0.36
    got = policy.collect(inbox([0.01, 0.2], cost=0.05), np.zeros((1, 1)),
                         np.full((1, 1), 0.02), receiver)
    assert got.done[0, 0] == pytest.approx(0.36)
    assert got.calls[0, 0] == 3


# ----------------------------------------------------------------------------- engine


def test_makespan_is_the_longest_path_through_messages_and_barriers() -> None:
    """Two tasks, two steps. Step 0: task 0 computes 1 s then sends (send 0.5 s, transit
    0.25 s) to task 1, which computes 0.1 s and receives with calls of 0.1 s.
    Step 1 starts after a barrier (launch 2 s) and only computes 0.3 s."""
    model = fixed_model(send=0.5, transit=0.25, call=0.1, launch=2.0)
    step0 = Step(pre=Work(np.array([1.0, 0.1])), local=Work.zero(2), post=Work.zero(2),
                 jobs=Jobs(np.array([0]), np.array([1.0]),
                           Work(np.zeros(1), (("send", np.ones(1)),))),
                 messages=Messages(np.array([0]), np.array([1]), Work.zero(1), np.zeros(1),
                                   transit="transit"))
    step1 = Step(pre=Work(np.full(2, 0.3)), local=Work.zero(2), post=Work.zero(2),
                 jobs=Jobs(np.zeros(0, dtype=int), np.zeros(0), Work.zero(0)),
                 messages=Messages(np.zeros(0, dtype=int), np.zeros(0, dtype=int),
                                   Work.zero(0), np.zeros(0)),
                 barrier=Work(np.zeros(2), (("launch", np.ones(2)),)))
    graph = TaskGraph(2, (step0, step1), Receiver("longpoll", ("call",)), senders=1,
                      bandwidth=1e9, launch=Work.zero(2), before=Work(np.full(1, 1.0)),
                      after=Work(np.full(1, 0.5)))
    simulation = simulate(graph, model, draws=20)
    # task 1 gets the message at 1 + 1 + 0.5 + 0.25 = 2.75, its call returns at 2.85;
    # the barrier opens at 2.85, step 1 ends at 2.85 + 2 + 0.3; then 0.5 after
    assert simulation.makespan == pytest.approx(np.full(20, 2.85 + 2.3 + 0.5))
    assert simulation.timeline.wait[1, 0] == pytest.approx(2.85 - 1.1)
    assert simulation.timeline.compute[0, 0] == pytest.approx(1.0)
    assert simulation.calls[1, 0] == 1


def test_sender_threads_queue_their_jobs_in_order() -> None:
    model = fixed_model(send=1.0, call=0.0)
    n = 5
    step = Step(pre=Work.zero(1), local=Work.zero(1), post=Work.zero(1),
                jobs=Jobs(np.zeros(n, dtype=int), np.zeros(n),
                          Work(np.zeros(n), (("send", np.ones(n)),))),
                messages=Messages(np.arange(n), np.zeros(n, dtype=int), Work.zero(n),
                                  np.zeros(n)), flush=True)
    graph = TaskGraph(1, (step,), Receiver("longpoll", ("call",), batch=10), senders=2,
                      bandwidth=1e9, launch=Work.zero(1), before=Work.zero(1),
                      after=Work.zero(1))
    # five 1-second sends on two threads: done at 1, 1, 2, 2, 3
    assert simulate(graph, model, draws=10).makespan == pytest.approx(np.full(10, 3.0))


# ----------------------------------------------------------------------------- packing


def brute_force_batches(sizes: list[int], limit: int) -> int:
    calls, count, total = 0, MAX_BATCH_ENTRIES, 0
    for size in sizes:
        if count == MAX_BATCH_ENTRIES or total + size > limit:
            calls, count, total = calls + 1, 0, 0
        count, total = count + 1, total + size
    return calls


@pytest.mark.parametrize("seed", range(5))
def test_batch_packing_matches_its_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 3000, size=int(rng.integers(1, 40))).tolist()
    batches = pack_batches(sizes, 8000)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    assert len(batches) == brute_force_batches(sizes, 8000)
    assert all(len(b) <= MAX_BATCH_ENTRIES for b in batches)
    assert all(len(b) == 1 or sum(sizes[i] for i in b) <= 8000 for b in batches)
