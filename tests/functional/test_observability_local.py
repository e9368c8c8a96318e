"""Powertools logs and metrics of a whole execution, read back from CloudWatch Logs.

template.yaml deployed into the embedded AWS; one small execution; then what ``sam logs``
or the console would show: each function's log group in (moto's) CloudWatch Logs, where
the local Lambda runtime copies the invocations' output as Lambda does. Every JSON line
names the execution; the Gather function's EMF document carries the run's totals, which
must equal the metrics document the run wrote to S3.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fsd_inference.app.driver import RunOptions, RunReport, run_on_stack
from fsd_inference.cloud.stack import StackOutputs, service_client
from fsd_inference.local.emulator import LocalCloud
from fsd_inference.local.stack import deploy_stack
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path

STACK = "fsd-observed"
EXECUTION = "fsd-observed-run"
WORKERS = 2


@pytest.fixture(scope="module")
def stack(cloud: LocalCloud) -> StackOutputs:
    return deploy_stack(STACK, cloud.aws).outputs


@pytest.fixture(scope="module")
def report(cloud: LocalCloud, stack: StackOutputs, tmp_path_factory: pytest.TempPathFactory
           ) -> RunReport:
    model = tmp_path_factory.mktemp("model") / "net-1024x4.fsdm"
    save_network(generate(GeneratorParams(1024, 4, 2)), model)
    options = RunOptions(model=model, input=sample_input_path(), rows=200, workers=WORKERS,
                         partition="random", layers_per_block=2, receive_timeout_s=10.0,
                         poll_s=0.25, execution_name=EXECUTION)
    result = run_on_stack(STACK, options, cloud.aws)
    assert result.status == "SUCCEEDED"
    return result


def log_lines(cloud: LocalCloud, function: str) -> list[str]:
    client = service_client("logs", cloud.aws)
    events = client.filter_log_events(logGroupName=f"/aws/lambda/{function}")["events"]
    return [event["message"] for event in events]


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize("step", ["Plan", "Worker", "Gather", "Cleanup"])
def test_every_function_logs_json_lines_naming_the_execution(
        cloud: LocalCloud, stack: StackOutputs, report: RunReport, step: str) -> None:
    lines = log_lines(cloud, stack.functions[step])
    records = [r for r in json_lines(lines) if "level" in r]
    assert records, lines
    for record in records:
        assert record["execution"] == EXECUTION and record["step"] == step.lower(), record
        assert record["function_name"] == stack.functions[step]
        assert record["function_request_id"]
        if step == "Worker":
            assert record["worker"] in range(WORKERS) and record["block"] in (0, 1)
    assert {r["message"] for r in records} == {f"{step.lower()} done"}
    # what is not JSON is the runtime's own START / END lines, as on Lambda
    others = [line for line in lines if not line.startswith("{")]
    assert all(line.startswith(("START RequestId", "END RequestId")) for line in others), others


def test_the_gather_function_emits_the_runs_totals_as_emf(
        cloud: LocalCloud, stack: StackOutputs, report: RunReport) -> None:
    documents = [r for r in json_lines(log_lines(cloud, stack.functions["Gather"]))
                 if "_aws" in r]
    assert len(documents) == 1
    document = documents[0]
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "FsdInference"
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["BytesSent"] == "Bytes" and units["ComputeSeconds"] == "Seconds"
    metrics = report.metrics or {}
    totals = metrics["summary"]["totals"]
    calls = sum(metrics["summary"]["api_calls"].values()) + \
        sum(metrics["api_calls_outside_workers"].values())
    assert document["BytesSent"] == [float(totals["bytes_sent"])]
    assert document["MessagesSent"] == [float(totals["messages_sent"])]
    assert document["ComputeSeconds"] == [pytest.approx(totals["compute_s"])]
    assert document["WaitSeconds"] == [pytest.approx(totals["wait_s"])]
    assert document["ApiCalls"] == [float(calls)]
    assert document["CostUSD"] == [pytest.approx(metrics["cost"]["total_usd"])]
    assert document["Categories"] == [float(metrics["categories"])]
    assert (document["execution"], document["channel"], document["workers"]) == (
        EXECUTION, "queue", WORKERS)


def test_workers_emit_one_emf_document_per_invocation(
        cloud: LocalCloud, stack: StackOutputs, report: RunReport) -> None:
    documents = [r for r in json_lines(log_lines(cloud, stack.functions["Worker"]))
                 if "_aws" in r]
    invocations = (report.metrics or {})["lambda"]["worker"]["invocations"]
    assert len(documents) == invocations == 2 * WORKERS
    assert sorted((d["block"], d["worker"]) for d in documents) == [
        (b, p) for b in range(2) for p in range(WORKERS)]
    assert all(d["Layers"] == [2.0] for d in documents)


def test_metrics_record_when_each_layer_started_and_to_whom_bytes_went(
        report: RunReport) -> None:
    metrics = report.metrics or {}
    for worker in metrics["per_worker"]:
        layers = worker["layers"]
        assert [layer["layer"] for layer in layers] == [1, 2, 3, 4]
        starts = [layer["started_at"] for layer in layers]
        assert starts == sorted(starts) and starts[0] > 1.7e9  # wall clock, in order
        assert all(0 <= layer["send_s"] <= layer["compute_s"] for layer in layers)
        sent = sum(layer["bytes_sent"] for layer in layers)
        assert sum(worker["bytes_to"].values()) == sent > 0
        assert str(worker["worker"]) not in worker["bytes_to"]  # nothing to itself
