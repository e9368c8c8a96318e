"""The shaped predictions' exact counts against real runs, and the planner end to end.

Counts: the same network, rows, shape and execution id go to a real ``run_inference``
over the queue channel (the embedded moto server) and to the shaped predictor; the
blocks, frames and bytes every task sends across a stage boundary, and its SQS send
calls, must equal what the run recorded, task by task. Planner: a small generated
network (1024 x 40, 200 inputs) ranked under a few constraints, and ``--strategy auto``
through the real ``fsd infer`` against ``fsd reference``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.channels import ChannelConfig
from fsd_inference.cloud.auto_plan import resolve_auto_request
from fsd_inference.cloud.errors import RequestError
from fsd_inference.cloud.plan_step import parse_request
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.config import AwsConfig
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input, write_input
from fsd_inference.planner import Constraints, NoFeasiblePlan, PlanResult, Settings, plan_job
from fsd_inference.planner.choose import rank
from fsd_inference.predict.params import load_service_model
from fsd_inference.predict.shaped_document import shaped_document
from fsd_inference.predict.shaped_predict import ShapeOptions, predict_shape, wanted_blocks
from fsd_inference.predict.trace import trace_run
from fsd_inference.strategy import compile_shape
from fsd_inference.strategy.memory import task_memory_mb

ROWS = 200
TRAFFIC = ("messages_sent", "frames_sent", "bytes_sent")


@pytest.fixture(scope="module")
def small() -> tuple[Network, sp.csr_matrix]:
    network = generate(GeneratorParams(1024, 40, seed=3))
    inputs = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:ROWS])
    return network, inputs


@pytest.fixture(scope="module")
def planned(small: tuple[Network, sp.csr_matrix]) -> PlanResult:
    """Every strategy, neuron included (8 workers), ranked by cost."""
    network, inputs = small
    return plan_job(network, inputs, Constraints("cost"), Settings(draws=20),
                    load_service_model(), 8, ("data", "pipeline", "hybrid", "neuron"),
                    final_draws=40)


def _sent(document: dict[str, Any]) -> list[dict[str, int]]:
    return [{k: sum(layer[k] for layer in worker["layers"]) for k in TRAFFIC}
            for worker in document["per_worker"]]


@pytest.mark.parametrize(("strategy", "workers", "stages", "groups"),
                         [("pipeline", 3, 3, None), ("hybrid", 4, 2, 2)])
def test_shaped_counts_equal_a_real_run(aws: AwsConfig, strategy: str, workers: int,
                                        stages: int | None, groups: int | None) -> None:
    network = generate(GeneratorParams(1024, 9, seed=5))
    inputs = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:ROWS])
    options = InferOptions(workers=workers, channel="queue", strategy=strategy, stages=stages,
                           groups=groups, config=ChannelConfig(aws=aws))
    measured = run_inference(network, inputs, options).metrics_document()
    shape = compile_shape(strategy, workers, network.depth, ROWS, stages=stages, groups=groups)
    trace = trace_run(network, inputs, "float64", wanted_blocks(shape, ROWS),
                      measured["execution"], 1 << 40)
    assert aws.bucket
    prediction = predict_shape(trace, shape, ShapeOptions(channel="queue", draws=20,
                                                          execution=measured["execution"],
                                                          bucket=aws.bucket),
                               load_service_model())
    predicted = shaped_document(prediction, trace.categories)
    assert predicted["categories"] == measured["categories"]
    per_task = [{k: 0 for k in TRAFFIC} for _ in range(workers)]
    for traffic in prediction.built.traffic:
        for src, frames, size in zip(traffic.src, traffic.frames, traffic.frame_bytes,
                                     strict=True):
            per_task[src]["messages_sent"] += 1
            per_task[src]["frames_sent"] += int(frames)
            per_task[src]["bytes_sent"] += int(size)
    assert per_task == _sent(measured)
    assert sum(t["bytes_sent"] for t in per_task) > 0  # real blocks were compared
    real_sends = sum(w["api_calls"].get("SQS.SendMessageBatch", 0)
                     for w in measured["per_worker"])
    assert predicted["summary"]["api_calls"].get("SQS.SendMessageBatch", 0) == real_sends
    real_deletes = sum(w["api_calls"].get("SQS.DeleteMessageBatch", 0)
                       for w in measured["per_worker"])
    assert real_deletes > 0  # the run read messages, in batches of ten
    assert prediction.api_calls["SQS.DeleteMessageBatch"] == real_deletes


def test_planner_prefers_no_exchange_for_a_model_that_fits(planned: PlanResult) -> None:
    chosen = planned.chosen
    assert chosen.candidate.strategy == "data"
    neuron = [e for e in planned.ranked if e.candidate.strategy == "neuron"]
    assert neuron, "the neuron plan was not ranked"
    assert min(e.cost_usd for e in neuron) > planned.ranked[0].cost_usd
    assert "no exchange" in planned.why
    costs = [e.cost_usd for e in planned.ranked]
    assert costs == sorted(costs)


def test_planner_honours_deadline_and_budget(planned: PlanResult) -> None:
    p95s = sorted(e.p95 for e in planned.ranked)
    deadline = p95s[len(p95s) // 2]
    within = rank(planned.evaluated, Constraints("latency", deadline_s=deadline))
    assert within and all(e.p95 <= deadline for e in within)
    assert len(within) < len(planned.ranked)
    p50s = [e.p50 for e in within]
    assert p50s == sorted(p50s)
    costs = sorted(e.cost_usd for e in planned.ranked)
    budget = costs[len(costs) // 2]
    affordable = rank(planned.evaluated, Constraints("latency", budget_usd=budget))
    assert affordable and all(e.cost_usd <= budget for e in affordable)
    with pytest.raises(NoFeasiblePlan, match="costs at most"):
        rank(planned.evaluated, Constraints("cost", budget_usd=costs[0] / 2))
    with pytest.raises(NoFeasiblePlan, match="deadline"):
        rank(planned.evaluated, Constraints("cost", deadline_s=p95s[0] / 2))


@pytest.fixture(scope="module")
def files(small: tuple[Network, sp.csr_matrix], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Path]:
    network, inputs = small
    folder = tmp_path_factory.mktemp("planner")
    model, source = folder / "net.fsdm", folder / "inputs.tsv"
    save_network(network, model)
    write_input(inputs, source)
    return model, source


def test_plan_refuses_what_does_not_fit_and_says_why(files: tuple[Path, Path],
                                                     run_fsd: Callable[..., Any]) -> None:
    model, source = files
    # one data task holds 1024 x 32 x 40 edges at 12 bytes (15.0 MiB), 3 x 200 x 1024
    # float64 activations (4.7 MiB) and the 300 MB runtime reserve: 319.7 -> 320 MB; two
    # stages hold half the edges: 312 MB
    done = run_fsd("plan", "--model", model, "--input", source, "--objective", "cost",
                   "--memory", 316, "--max-workers", 4, "--draws", 10, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "refused: data x1: a task needs about 320 MB, the function has 316 MB" in done.stdout
    chosen = next(line for line in done.stdout.splitlines() if line.startswith("chosen:"))
    assert "data" not in chosen and "stages" in chosen


def test_plan_budget_nothing_meets_is_one_clear_error(files: tuple[Path, Path],
                                                      run_fsd: Callable[..., Any],
                                                      assert_clean_error: Callable[..., None]
                                                      ) -> None:
    model, source = files
    done = run_fsd("plan", "--model", model, "--input", source, "--objective", "cost",
                   "--budget", "0.000001", "--max-workers", 2, "--draws", 10, "--quiet")
    assert done.returncode == 2
    assert_clean_error(done, "no plan costs at most $1e-06", "the cheapest")


def test_predict_refuses_a_shape_that_does_not_fit(files: tuple[Path, Path],
                                                   run_fsd: Callable[..., Any],
                                                   assert_clean_error: Callable[..., None]
                                                   ) -> None:
    model, source = files
    done = run_fsd("predict", "--model", model, "--input", source, "--strategy", "data",
                   "--workers", 1, "--memory", 256)
    assert done.returncode == 2
    # the progress line, then the error
    assert "does not fit" in done.stderr and "Traceback" not in done.stderr
    assert "256 MB" in done.stderr.splitlines()[-1]


def test_infer_auto_equals_the_reference(files: tuple[Path, Path],
                                         run_fsd: Callable[..., Any], tmp_path: Path) -> None:
    model, source = files
    reference = tmp_path / "reference.txt"
    assert run_fsd("reference", "--model", model, "--input", source, "--out", reference,
                   "--quiet").returncode == 0
    done = run_fsd("infer", "--model", model, "--input", source, "--workers", 4,
                   "--strategy", "auto", "--out", tmp_path / "auto.txt", "--expect",
                   reference, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "auto chose" in done.stderr
    assert "match: identical" in done.stdout
    assert reference.read_text() == (tmp_path / "auto.txt").read_text()


def test_infer_auto_plans_a_large_batch_from_a_sample(run_fsd: Callable[..., Any],
                                                      tmp_path: Path) -> None:
    """Above 1,024 rows ``fsd infer --strategy auto`` traces the Plan step's sample, not
    every row (a whole extra reference pass), says so, and still equals the reference."""
    model, source = tmp_path / "n.fsdm", tmp_path / "in.tsv"
    save_network(generate(GeneratorParams(1024, 3, seed=3)), model)
    write_input(read_input(sample_input_path(), neurons=1024)[:1500], source)
    reference = tmp_path / "reference.txt"
    assert run_fsd("reference", "--model", model, "--input", source, "--out", reference,
                   "--quiet").returncode == 0
    done = run_fsd("infer", "--model", model, "--input", source, "--workers", 2,
                   "--strategy", "auto", "--out", tmp_path / "auto.txt", "--expect",
                   reference)
    assert done.returncode == 0, done.stderr
    assert "1,500 inputs" in done.stderr and "over 1,024 sampled rows" in done.stderr
    assert "estimated from 1,024 sampled rows" in done.stderr
    assert "match: identical" in done.stdout


def test_planner_ranks_both_channels(planned: PlanResult) -> None:
    """Every shape that exchanges is predicted over the queue and over S3 alone; a data
    shape talks to nobody, so it is predicted once, without a channel."""
    by_channel: dict[str | None, set[tuple[Any, ...]]] = {}
    costs: dict[tuple[Any, ...], dict[str | None, float]] = {}
    for e in planned.evaluated:
        c = e.candidate
        shape = (c.strategy, c.workers, c.stages, c.groups, e.memory_mb)
        by_channel.setdefault(c.channel, set()).add(shape)
        costs.setdefault(shape, {})[c.channel] = e.cost_usd
    assert {s[0] for s in by_channel[None]} == {"data"}
    assert by_channel["queue"] == by_channel["object"]
    assert {s[0] for s in by_channel["queue"]} == {"pipeline", "hybrid", "neuron"}
    # the two channels bill different requests: the same shape costs differently
    assert all(c["queue"] != c["object"] for c in costs.values() if None not in c)
    assert "--channel" in planned.ranked[-1].candidate.label() or \
        planned.ranked[-1].candidate.channel is None


def _request(settings: CloudSettings, **fields: Any) -> Any:
    base = {"model": "models/net.fsdm", "input": "inputs/x.tsv", "workers": 8, **fields}
    return parse_request(base, settings)


def test_auto_in_the_plan_step_chooses_within_the_deployment(
        small: tuple[Network, sp.csr_matrix]) -> None:
    """What the Plan step does with ``"strategy": "auto"`` (cloud/auto_plan.py), on the
    real network and rows: a plan at the deployment's worker memory, at most the
    request's workers, the channel kept when the request names one."""
    network, inputs = small
    settings = CloudSettings(aws=AwsConfig(bucket="b"), worker_memory_mb=1024)
    resolved, record = resolve_auto_request(_request(settings, channel="object"), network,
                                            inputs, settings)
    assert resolved.strategy in ("data", "pipeline", "hybrid") and resolved.workers <= 8
    assert resolved.channel == "object"
    assert record["options"]["strategy"] == resolved.strategy
    assert record["options"]["memory_mb"] == 1024
    assert record["predicted"]["cost_usd"] > 0 and record["predicted"]["p50_s"] > 0
    assert record["predicted"]["sampled_rows"] == ROWS  # under the sample size: every row
    # the shape it chose compiles and fits, as the rest of the Plan step will check
    shape = compile_shape(resolved.strategy, resolved.workers, network.depth, ROWS,
                          stages=resolved.stages, groups=resolved.groups,
                          microbatches=resolved.microbatches)
    assert task_memory_mb(shape, network.neurons, network.edges, ROWS, "float64") <= 1024


def test_auto_in_the_plan_step_falls_back_or_names_the_constraint(
        small: tuple[Network, sp.csr_matrix]) -> None:
    network, inputs = small
    tiny = CloudSettings(aws=AwsConfig(bucket="b"), worker_memory_mb=128)  # below the runtime
    resolved, record = resolve_auto_request(_request(tiny), network, inputs, tiny)
    assert (resolved.strategy, resolved.workers) == ("neuron", 8)
    assert record["predicted"] is None and "no data, pipeline or hybrid plan fits" in \
        record["why"]
    roomy = CloudSettings(aws=AwsConfig(bucket="b"), worker_memory_mb=1024)
    with pytest.raises(RequestError, match="deadline") as caught:
        resolve_auto_request(_request(roomy, deadline_s=0.001), network, inputs, roomy)
    assert caught.value.field == "deadline_s"


def test_auto_reaching_the_plan_step_of_local_tasks_keeps_their_channel(
        small: tuple[Network, sp.csr_matrix]) -> None:
    """fsd infer's tasks run the same Plan step: ``auto`` there is ranked as if on AWS,
    and the local memory channel stays the run's channel."""
    network, inputs = small
    result = run_inference(network, inputs, InferOptions(workers=4, channel="memory",
                                                         strategy="auto"))
    document = result.metrics_document()
    assert document["auto"]["options"]["strategy"] == document["shape"]["strategy"]
    assert document["channel"] in ("memory", "none")  # none: the choice exchanges nothing
    np.testing.assert_array_equal(result.categories, infer(network, inputs).categories)
