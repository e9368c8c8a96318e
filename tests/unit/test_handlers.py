"""The serverless steps' pure parts: cost model, storage layout, request validation,
run payloads, deadlines, readable causes. No AWS (tests/unit/test_handlers_moto.py runs
the handlers against a moto server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsd_inference.channels import AWS_TRANSPORTS, transport_class
from fsd_inference.cloud.cleanup_step import readable_cause
from fsd_inference.cloud.errors import BlockDeadlineError, RequestError
from fsd_inference.cloud.layout import RUN_ID_MAX, RunLayout, block_range, run_id
from fsd_inference.cloud.plan_step import (
    choose_layers_per_block,
    map_mode,
    parse_request,
)
from fsd_inference.cloud.run import RunInfo, build_transport
from fsd_inference.cloud.schema import SchemaError
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.cloud.worker_step import CHECKPOINT_RESERVE_S, Deadline
from fsd_inference.config import AwsConfig
from fsd_inference.cost import estimate_cost, load_prices
from fsd_inference.exceptions import ConfigError
from fsd_inference.handlers import cleanup, gather, plan, worker
from fsd_inference.strategy import Shape, compile_shape

BUCKET = "fsd-test"
LoadEvent = Callable[[str], dict[str, Any]]


@pytest.fixture
def settings() -> CloudSettings:
    return CloudSettings(aws=AwsConfig(endpoint_url=None, region="us-east-1", bucket=BUCKET),
                         max_workers=64, message_limit=1 << 20, layers_per_block=20,
                         inline_map_limit=40, channel="queue", partition="random")


# ----------------------------------------------------------------------------- cost


def test_price_table_is_packaged_and_dated() -> None:
    prices = load_prices()
    assert prices["region"] == "us-east-1" and prices["currency"] == "USD"
    assert prices["as_of"]
    assert set(prices["lambda"]["gb_second"]) == {"arm64", "x86_64"}
    assert prices["lambda"]["gb_second"]["arm64"] < prices["lambda"]["gb_second"]["x86_64"]
    assert prices["sqs"]["billed_chunk_bytes"] == 64 * 1024


def cloud_document() -> dict[str, Any]:
    return {
        "lambda": {"plan": {"invocations": 1, "seconds": 10.0, "memory_mb": 4096},
                   "worker": {"invocations": 12, "seconds": 1200.0, "memory_mb": 0},
                   "gather": {"invocations": 1, "seconds": 2.0, "memory_mb": 1024}},
        "summary": {"api_calls": {"SQS.SendMessageBatch": 100, "SQS.ReceiveMessage": 300,
                                  "S3.GetObject": 1000, "S3.PutObject": 200},
                    "billed_requests": {"SQS.SendMessageBatch": 400, "SQS.ReceiveMessage": 300}},
        "api_calls_outside_workers": {"S3.PutObject": 20, "S3.ListObjectsV2": 5,
                                      "S3.HeadObject": 3, "S3.DeleteObjects": 7},
    }


def test_cost_items_add_up_by_hand() -> None:
    cost = estimate_cost(cloud_document(), memory_mb=2048, arch="arm64", transitions=100)
    items = cost["items"]
    # worker memory unknown (0): the default 2048 MB applies
    assert items["lambda_compute"]["quantity"] == pytest.approx(10 * 4 + 1200 * 2 + 2 * 1)
    assert items["lambda_requests"]["quantity"] == 14
    assert items["sqs_requests"]["quantity"] == 700  # billed per 64 KiB, not per call
    assert items["s3_put_list_requests"]["quantity"] == 200 + 20 + 5
    assert items["s3_get_other_requests"]["quantity"] == 1000 + 3  # DeleteObjects is free
    assert items["stepfunctions_transitions"]["quantity"] == 100
    expected = (2442 * 0.0000133334 + 14 * 0.0000002 + 700 * 0.0000004 + 225 * 0.000005
                + 1003 * 0.0000004 + 100 * 0.000025)
    assert cost["total_usd"] == pytest.approx(expected)
    assert cost["total_usd"] == pytest.approx(sum(i["usd"] for i in items.values()))
    assert cost["prices"]["region"] == "us-east-1"
    json.dumps(cost)  # JSON-safe


def test_cost_by_architecture_and_for_local_documents() -> None:
    arm = estimate_cost(cloud_document(), 2048, "arm64", 0)["items"]["lambda_compute"]["usd"]
    x86 = estimate_cost(cloud_document(), 2048, "x86_64", 0)["items"]["lambda_compute"]["usd"]
    assert arm / x86 == pytest.approx(0.8, rel=1e-4)
    local = {"per_worker": [{"total_s": 30.0}, {"total_s": 50.0}],
             "summary": {"api_calls": {}, "billed_requests": {}}}
    cost = estimate_cost(local, 1024, "x86_64", 0)
    assert cost["items"]["lambda_compute"]["quantity"] == pytest.approx(80.0)
    assert cost["items"]["lambda_requests"]["quantity"] == 2
    with pytest.raises(ConfigError, match="architecture"):
        estimate_cost(local, 1024, "sparc", 0)


# ----------------------------------------------------------------------------- layout


def test_run_ids_are_safe_short_and_deterministic() -> None:
    assert run_id("demo-1024_p8") == "demo-1024_p8"
    long = "x" * 80
    unsafe = "Run: 1024 x 120 (queue) ☃"
    for name in (long, unsafe):
        rid = run_id(name)
        assert len(rid) <= RUN_ID_MAX and rid == run_id(name)
        assert all(c.isalnum() or c in "-_" for c in rid)
    assert run_id("a" * 79 + "b") != run_id("a" * 79 + "c")
    with pytest.raises(ValueError):
        run_id("")


def test_layout_keys() -> None:
    layout = RunLayout("r1")
    assert layout.shard(3) == "runs/r1/shard-3.fsdm"
    assert layout.input(0) == "runs/r1/input-0.fsdm"
    assert layout.checkpoint(2, 7) == "runs/r1/ckpt/b2/w7.fsdm"
    assert layout.metrics(2, 7) == "runs/r1/metrics/b2/w7.json"
    assert layout.manifest == "runs/r1/run.json"
    assert layout.categories == "results/r1/categories.txt"
    assert not layout.categories.startswith(layout.prefix), "results outlive the scratch"


def test_block_ranges_cover_every_layer_once() -> None:
    for depth, per in ((120, 20), (121, 20), (6, 4), (5, 5), (7, 1)):
        blocks = -(-depth // per)
        ranges = [block_range(b, per, depth) for b in range(blocks)]
        covered = [k for first, last in ranges for k in range(first, last + 1)]
        assert covered == list(range(1, depth + 1))
    with pytest.raises(ValueError):
        block_range(6, 20, 120)


# ----------------------------------------------------------------------------- requests


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "models/net.fsdm", "input": "inputs/x.tsv.gz", "workers": 8, **fields}


def test_request_defaults(settings: CloudSettings) -> None:
    parsed = parse_request(request(), settings)
    assert parsed.channel == "queue" and parsed.partition == "random"
    assert parsed.dtype == "float64" and parsed.message_limit == 1 << 20
    assert parsed.layers_per_block is None and parsed.seed == 0
    # the planner chooses unless the request names a strategy; the channel left out
    # is the deployment's, which auto may replace
    assert (parsed.strategy, parsed.objective, parsed.channel_named) == ("auto", "cost", False)
    named = parse_request(request(channel="object", strategy="neuron"), settings)
    assert (named.strategy, named.channel, named.channel_named) == ("neuron", "object", True)
    same_bucket = parse_request(request(model=f"s3://{BUCKET}/models/net.fsdm"), settings)
    assert same_bucket.model == "models/net.fsdm"


@pytest.mark.parametrize(("fields", "field", "fragment"), [
    ({"workers": 65}, "workers", "between 1 and 64"),
    ({"workers": True}, "workers", "Expected `int`, got `bool`"),
    ({"workers": None}, "workers", "got `null`"),
    ({"workers": 10**9}, "workers", "<= 1000"),
    ({"channel": "memory"}, "channel", "object, queue"),
    ({"partition": "metis"}, "partition", "unknown partitioner"),
    ({"strategy": "fastest"}, "strategy", "choose one of auto, neuron"),
    ({"stages": 2}, "stages", "does not apply to strategy auto"),
    ({"objective": "speed"}, "objective", "cost, latency"),
    ({"strategy": "data", "objective": "cost"}, "objective", "strategy auto only"),
    ({"strategy": "neuron", "budget_usd": 1.0}, "budget_usd", "strategy auto only"),
    ({"deadline_s": 0}, "deadline_s", "> 0"),
    ({"budget_usd": float("inf")}, "budget_usd", "finite"),
    ({"dtype": "float16"}, "dtype", "float64"),
    ({"receive_timeout_s": 600}, "receive_timeout_s", "<= 120"),
    ({"receive_timeout_s": "5"}, "receive_timeout_s", "got `str`"),
    ({"message_limit": 10}, "message_limit", ">= 1024"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"rows": 0}, "rows", ">= 1"),
    ({"layers_per_block": 0}, "layers_per_block", ">= 1"),
    ({"model": "s3://elsewhere/net.fsdm"}, "model", "copy it there"),
    ({"input": ""}, "input", "key such as"),
    ({"input": "../other-run/x"}, "input", "'..'"),
    ({"model": "models/../runs/x/run.json"}, "model", "'..'"),
    ({"expect": "/etc/passwd"}, "expect", "leading '/'"),
    ({"bias": float("nan")}, "bias", "finite"),
    ({"worker": 3}, "worker", "unknown field"),
    # finding 1: a run object smuggled into the execution input
    ({"run": {"execution": "other-run", "workers": 3}}, "run", "unknown field"),
])
def test_request_errors_name_the_field(settings: CloudSettings, fields: dict[str, Any],
                                       field: str, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment) as caught:
        parse_request(request(**fields), settings)
    assert caught.value.field == field
    assert type(caught.value).__name__ == "RequestError"  # the Step Functions error name


def test_layers_per_block_default_is_raised_and_explicit_values_refused(
        settings: CloudSettings) -> None:
    deep = parse_request(request(workers=40), settings)

    def neuron(depth: int) -> Shape:
        return compile_shape("neuron", 40, depth, 1000)

    chosen, notes = choose_layers_per_block(deep, 1920, "inline", settings, neuron(1920))
    assert chosen == 29 and "raised from 20 to 29" in notes[0]
    shallow, notes = choose_layers_per_block(deep, 120, "inline", settings, neuron(120))
    assert (shallow, notes) == (20, [])
    assert choose_layers_per_block(deep, 6, "inline", settings, neuron(6))[0] == 6
    explicit = parse_request(request(workers=40, layers_per_block=10), settings)
    with pytest.raises(RequestError, match="at least 29 layers per block"):
        choose_layers_per_block(explicit, 1920, "inline", settings, neuron(1920))
    # stages work at the same time: a pipeline runs in one block, and says so
    pipeline = compile_shape("pipeline", 4, 120, 1000)
    assert choose_layers_per_block(deep, 120, "inline", settings, pipeline) == (120, [])
    with pytest.raises(RequestError, match="one block"):
        choose_layers_per_block(explicit, 120, "inline", settings, pipeline)
    assert map_mode(40, settings) == "inline" and map_mode(41, settings) == "distributed"


def test_row_parts_are_validated(settings: CloudSettings) -> None:
    neuron = {"strategy": "neuron"}
    assert parse_request(request(microbatches=4, **neuron), settings).microbatches == 4
    assert parse_request(request(**neuron), settings).microbatches is None  # the default
    for bad in (0, 1025, 2.5, "4", True):
        with pytest.raises(RequestError, match="microbatches"):
            parse_request(request(microbatches=bad, **neuron), settings)


# ----------------------------------------------------------------------------- run payloads


def test_sample_events_parse(load_event: LoadEvent, settings: CloudSettings) -> None:
    for name in ("worker_block", "gather_default"):
        run = RunInfo.from_dict(load_event(name)["run"])
        assert run.to_dict() == load_event(name)["run"]
    assert set(load_event("worker_block")) == {"run", "block", "worker"}
    plan = load_event("plan_default")
    assert plan["request"] == load_event("statemachine_default")
    parse_request(plan["request"], CloudSettings(aws=settings.aws, partition="hypergraph"))
    parse_request(load_event("plan_small")["request"], settings)
    for name in ("cleanup_default", "cleanup_failure", "cleanup_plan_failure"):
        event = load_event(name)
        assert isinstance(event["execution"], str) and isinstance(event["state"], dict)


def test_run_payload_errors(load_event: LoadEvent) -> None:
    run = load_event("worker_block")["run"]
    for broken, fragment in (({**run, "workers": "8"}, "'workers': Expected `int`, got `str`"),
                             ({**run, "blocks": 5}, "does not match"),
                             ({**run, "map": "parallel"}, "'map': Invalid enum value")):
        with pytest.raises(ConfigError, match=fragment):
            RunInfo.from_dict(broken)
    missing = dict(run)
    del missing["channel"]
    with pytest.raises(ConfigError, match="missing required field `channel`"):
        RunInfo.from_dict(missing)


@pytest.mark.parametrize("channel", sorted(AWS_TRANSPORTS))
def test_transport_is_rebuilt_from_payload_and_environment(load_event: LoadEvent,
                                                           channel: str) -> None:
    run = RunInfo.from_dict({**load_event("worker_block")["run"], "channel": channel})
    aws = AwsConfig(endpoint_url="http://127.0.0.1:1", region="eu-west-1", bucket=None,
                    queue_prefix="fsdtest")
    transport = build_transport(run, aws)
    assert isinstance(transport, transport_class(channel))
    assert (transport.execution, transport.workers) == (run.execution, run.workers)
    assert transport.config.max_message_bytes == run.message_limit
    assert transport.config.receive_timeout_s == run.receive_timeout_s
    assert transport.config.aws.bucket == run.bucket  # spills go to the run's bucket
    assert transport.config.aws.endpoint_url == aws.endpoint_url
    assert transport.config.aws.queue_prefix == "fsdtest"


def test_state_stays_far_below_the_payload_limit(load_event: LoadEvent) -> None:
    """The largest state the machine carries (the Cleanup input at the most workers the
    template allows) is a small fraction of Step Functions' 256 KiB."""
    run = {**load_event("worker_block")["run"], "workers": 1000, "map": "distributed"}
    state = {"run": run, "items": list(range(1000)), "cursor": {"block": 5},
             "gather": load_event("cleanup_default")["state"]["gather"],
             "error": {"Error": "RetryableBlockError", "Cause": "x" * 4096}}
    assert len(json.dumps(state)) < 256 * 1024 // 8


def test_handlers_reject_malformed_events(load_event: LoadEvent) -> None:
    event = load_event("worker_block")
    del event["block"]
    with pytest.raises(ConfigError, match="missing required field `block`"):
        worker.handler(event, None)
    with pytest.raises(ConfigError, match="'block': Expected `int`, got `str`"):
        worker.handler({**load_event("worker_block"), "block": "1"}, None)
    with pytest.raises(ConfigError, match=r"'state': Expected `object \| null`, got `array`"):
        cleanup.handler({"execution": "x", "state": [1]}, None)


@pytest.mark.parametrize(("handler", "event", "fragment"), [
    (plan.handler, {"execution": "", "request": {}}, "'execution': Expected `str` of length >= 1"),
    (cleanup.handler, {"execution": ""}, "'execution': Expected `str` of length >= 1"),
    (cleanup.handler, {"execution": "x" * 81}, "length <= 80"),
    (cleanup.handler, {}, "missing required field `execution`"),
    (worker.handler, "not an object", "Expected `object`, got `str`"),
    (worker.handler, {"block": 3}, "block 3 is outside 0..2"),
    (worker.handler, {"worker": 3}, "worker 3 is outside 0..2"),
    (worker.handler, {"block": -1}, "'block': Expected `int` >= 0"),
    (worker.handler, {"run": {"layers_per_block": 0}},
     "'run.layers_per_block': Expected `int` >= 1"),
    (worker.handler, {"run": {"execution": "../../escape"}},
     "'run.execution': Expected `str` matching"),
    (worker.handler, {"run": {"execution": ""}}, "'run.execution': Expected `str` matching"),
    (worker.handler, {"run": {"workers": 10**7}}, "'run.workers': Expected `int` <= 1000"),
    (worker.handler, {"run": {"bucket": "../x"}}, "'run.bucket'"),
    (worker.handler, {"run": {"prefix": "runs/x/"}}, "unknown field `prefix`"),
    (gather.handler, {"run": {"channel": "memory"}}, "run.channel must be one of"),
    (gather.handler, {"run": {"receive_timeout_s": float("nan")}}, "'run.receive_timeout_s'"),
])
def test_directly_invoked_handlers_reject_bad_events(
        load_event: LoadEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        handler: Callable[..., Any], event: Any, fragment: str) -> None:
    """Finding 8: one SchemaError naming the field, before anything is read or written
    (no AWS is reachable here, and the scratch folder stays empty)."""
    monkeypatch.setenv("FSD_SCRATCH_DIR", str(tmp_path / "scratch"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    sample = load_event("worker_block")
    if isinstance(event, dict) and handler in (worker.handler, gather.handler):
        run = {**sample["run"], **event.pop("run", {})}
        event = {**({"block": 0, "worker": 0} if handler is worker.handler else {}),
                 "run": run, **event}
    with pytest.raises(SchemaError) as caught:
        handler(event, None)
    assert fragment in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_run_in_another_bucket_is_refused(load_event: LoadEvent,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSD_BUCKET", "fsd-this-stack")
    with pytest.raises(SchemaError, match="names bucket 'fsd-local'"):
        worker.handler(load_event("worker_block"), None)
    with pytest.raises(SchemaError, match="names bucket 'fsd-local'"):
        gather.handler(load_event("gather_default"), None)


# ----------------------------------------------------------------------------- deadlines


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deadline_stops_a_block_that_would_not_fit() -> None:
    clock = FakeClock()
    deadline = Deadline(100.0, worker=2, block=1, last=30, clock=clock)
    clock.now += 10.0  # layer 21 took 10 s: 90 s left >= 10 * 1.5 + reserve
    deadline.after_layer(21)
    clock.now += 40.0  # layer 22 took 40 s: 50 s left < 40 * 1.5 + reserve
    with pytest.raises(BlockDeadlineError, match="lower layers_per_block") as caught:
        deadline.after_layer(22)
    assert (caught.value.worker, caught.value.block, caught.value.layer) == (2, 1, 22)
    last = Deadline(CHECKPOINT_RESERVE_S, worker=0, block=0, last=5, clock=clock)
    clock.now += 100.0
    last.after_layer(5)  # the block's last layer: nothing left to protect


# ----------------------------------------------------------------------------- causes


def test_readable_cause_from_a_lambda_error(load_event: LoadEvent) -> None:
    state = load_event("cleanup_failure")["state"]
    cause = readable_cause("r1", state["error"])
    assert cause.startswith("RetryableBlockError: worker 2, block 1: worker 2, layer 3: "
                            "timed out after 120 s")
    assert "execution r1" in cause and "stackTrace" not in cause
    bug = readable_cause("r1", {"Error": "KeyError", "Cause": json.dumps(
        {"errorMessage": "'x'", "errorType": "KeyError",
         "stackTrace": ['  File "a.py", line 3, in f\n']})})
    assert bug.startswith("KeyError: 'x' [at File \"a.py\", line 3, in f]")
    assert readable_cause("r1", {"Error": "States.Timeout", "Cause": "task timed out"}
                          ).startswith("States.Timeout: task timed out")
    assert "no error details" in readable_cause("r1", None)
