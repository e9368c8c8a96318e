"""The Lambda handlers with the real event files against a moto server on loopback.

The state machine's path is replayed by hand, building each handler's event the way
statemachine/inference.asl.json does (Plan's payload, the Map's ItemSelector, Gather's
and Cleanup's payloads), with the P workers of a block running at once in threads.
The ASL itself runs in moto's interpreter in the local runtime's tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsd_inference.aws import s3_client
from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.cloud.errors import (
    BlockDeadlineError,
    RequestError,
    RetryableBlockError,
    RunCancelled,
    StorageError,
)
from fsd_inference.cloud.layout import RunLayout, run_id
from fsd_inference.config import AwsConfig
from fsd_inference.handlers import cleanup, gather, plan, worker
from fsd_inference.local import local_aws
from fsd_inference.local.server import patched_environ
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.storage import S3Storage, Storage

LoadEvent = Callable[[str], dict[str, Any]]


class Context:
    """The part of Lambda's context object the handlers use."""

    def __init__(self, seconds: float = 900.0) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


@pytest.fixture(scope="module")
def small_network() -> Network:
    return generate(GeneratorParams(1024, 6, 3))  # events/plan_small.json's model


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory, small_network: Network
        ) -> Iterator[AwsConfig]:
    """One moto server for the module, with the sample model and input uploaded."""
    scratch = tmp_path_factory.mktemp("lambda-tmp")
    with local_aws() as config, patched_environ({"FSD_SCRATCH_DIR": str(scratch),
                                                 "FSD_PARTITION": "random"}):
        assert config.bucket
        bundle = scratch / "net.fsdm"
        save_network(small_network, bundle)
        storage = S3Storage(config.bucket, s3_client(config))
        storage.put_file("models/radixnet-1024x6-seed3.fsdm", bundle)
        storage.put_file("inputs/mnist-1024-first10k.tsv.gz", sample_input_path())
        yield config


@pytest.fixture
def storage(aws: AwsConfig) -> Storage:
    assert aws.bucket
    return S3Storage(aws.bucket, s3_client(aws))


def run_block(state: dict[str, Any], context: Context | None = None) -> list[Any]:
    """The Map state: one worker handler per item, all at once (MaxConcurrency 0)."""
    results: list[Any] = [None] * len(state["items"])

    def iteration(index: int, item: int) -> None:
        event = {"run": state["run"], "block": state["cursor"]["block"], "worker": item}
        try:
            results[index] = worker.handler(event, context or Context())
        except Exception as exc:  # the Map fails with the first failed iteration's error
            results[index] = exc

    threads = [threading.Thread(target=iteration, args=(i, item))
               for i, item in enumerate(state["items"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def execute(plan_event: dict[str, Any]) -> dict[str, Any]:
    """Plan -> blocks -> Gather -> Cleanup, as the success path of the ASL passes state."""
    output = plan.handler(plan_event, Context())
    state = {"run": output["run"], "items": output["items"], "cursor": output["cursor"]}
    while state["cursor"]["block"] < state["run"]["blocks"]:
        for result in run_block(state):
            if isinstance(result, Exception):
                raise result
        state["cursor"] = {"block": state["cursor"]["block"] + 1}
    state["gather"] = {"summary": gather.handler({"run": state["run"]}, Context())}
    state["cleanup"] = {"summary": cleanup.handler(
        {"execution": plan_event["execution"], "state": state}, Context())}
    return state


def reference_categories(network: Network, rows: int) -> np.ndarray:
    inputs = read_input(sample_input_path(), neurons=network.neurons)[:rows]
    return infer(network, inputs).categories


CHANNELS = sorted(AWS_TRANSPORTS)


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_run_matches_the_reference_and_cleans_up(load_event: LoadEvent, storage: Storage,
                                                   small_network: Network, channel: str
                                                   ) -> None:
    event = load_event("plan_small")
    event["execution"] = f"{event['execution']}-{channel}"
    expected = reference_categories(small_network, event["request"]["rows"])
    storage.put_bytes("expected/small.txt", "".join(f"{c}\n" for c in expected).encode())
    event["request"] = {**event["request"], "channel": channel, "expect": "expected/small.txt"}
    state = execute(event)
    run = state["run"]
    assert (run["workers"], run["blocks"], run["map"]) == (3, 3, "inline")
    assert set(run) >= set(load_event("worker_block")["run"])
    layout = RunLayout(run["execution"])
    categories = np.array(storage.get_bytes(layout.categories).split(), dtype=np.int64)
    np.testing.assert_array_equal(categories, expected)
    summary = state["gather"]["summary"]
    assert summary["categories"] == expected.size and summary["inputs"] == 300
    assert summary["expected_match"] is True
    metrics = storage.get_json(layout.metrics_document)
    assert metrics["lambda"]["worker"]["invocations"] == 9
    assert len(metrics["per_worker"]) == 3
    assert {len(w["layers"]) for w in metrics["per_worker"]} == {6}
    assert metrics["summary"]["totals"]["messages_sent"] > 0
    assert metrics["cost"]["total_usd"] > 0
    assert metrics["cost"]["items"]["stepfunctions_transitions"]["quantity"] == 4 + 3 * 7
    assert state["cleanup"]["summary"]["deleted_objects"] > 0
    assert list(storage.keys(layout.prefix)) == []
    assert list(storage.keys(f"scratch/{run['execution']}/")) == []
    assert storage.exists(layout.categories), "results outlive the cleanup"
    again = cleanup.handler({"execution": event["execution"], "state": state}, Context())
    assert again["deleted_objects"] == 0, "cleanup is idempotent"


def test_a_bad_request_fails_before_writing_anything(load_event: LoadEvent,
                                                     storage: Storage) -> None:
    event = load_event("plan_small")
    event["execution"] = "bad-request"
    event["request"] = {**event["request"], "workers": 100}
    with pytest.raises(RequestError, match="'workers': must be between 1 and 64"):
        plan.handler(event, Context())
    assert list(storage.keys(RunLayout("bad-request").prefix)) == []
    missing = {**load_event("plan_small"), "execution": "missing-model"}
    missing["request"] = {**missing["request"], "model": "models/none.fsdm"}
    with pytest.raises(StorageError, match=r"models/none\.fsdm: GET: no such object"):
        plan.handler(missing, Context())


@pytest.mark.parametrize("name", ["cleanup_failure", "cleanup_plan_failure"])
def test_failure_cleanup_gives_a_readable_cause(aws: AwsConfig, load_event: LoadEvent,
                                                name: str) -> None:
    event = load_event(name)  # the handlers read the bucket from the server's environment
    result = cleanup.handler(event, Context())
    assert result["failed"] is True
    error = event["state"]["error"]
    assert result["cause"].startswith(f"{error['Error']}: ")
    assert "errorMessage" not in result["cause"]


def test_an_execution_ended_outside_the_state_machine_is_cleaned_up(
        load_event: LoadEvent, storage: Storage) -> None:
    """The EventBridge rule's event (events/cleanup_stopped.json): the manifest decides."""
    event = load_event("cleanup_stopped")
    output = _plan(load_event, event["execution"])
    layout = RunLayout(output["run"]["execution"])
    assert storage.exists(layout.manifest)
    result = cleanup.handler(event, Context())
    assert result["failed"] is True and result["cause"].startswith("ExecutionAborted: ")
    assert result["transport"] == f"{output['run']['channel']} channel torn down (3 workers)"
    assert list(storage.keys(layout.prefix)) == []


def test_gather_compares_with_an_unreadable_expect_file_as_a_mismatch(
        storage: Storage, tmp_path: Path) -> None:
    from fsd_inference.cloud.gather_step import _compare

    storage.put_bytes("expected/binary.bin", bytes(range(256)) * 16)
    categories = np.array([1, 2, 3])
    for key, match in (("expected/binary.bin", False), ("expected/absent.txt", False)):
        assert _compare(storage, {"request": {"expect": key}}, categories, tmp_path) is match
    storage.put_bytes("expected/good.txt", b"1\n2\n3\n")
    assert _compare(storage, {"request": {"expect": "expected/good.txt"}}, categories,
                    tmp_path) is True


def _plan(load_event: LoadEvent, execution: str, **request: Any) -> dict[str, Any]:
    event = load_event("plan_small")
    event["execution"] = execution
    event["request"] = {**event["request"], **request}
    return plan.handler(event, Context())


def test_a_rerun_block_restarts_from_its_checkpoint(load_event: LoadEvent,
                                                    storage: Storage) -> None:
    output = _plan(load_event, "rerun-block")
    state = {**output}
    first = run_block(state)
    state["cursor"] = {"block": 1}
    once = run_block(state)
    layout = RunLayout(output["run"]["execution"])
    checkpoint = storage.get_bytes(layout.checkpoint(1, 0))
    twice = run_block(state)  # the Map's retry: the same block again, from checkpoint 0
    assert [r["nnz"] for r in once] == [r["nnz"] for r in twice]
    assert all(not isinstance(r, Exception) for r in first + once + twice)
    assert len(storage.get_bytes(layout.checkpoint(1, 0))) == len(checkpoint)
    cleanup.handler({"execution": "rerun-block", "state": state}, Context())


def test_a_lost_peer_is_retryable_until_the_run_is_cleaned_up(load_event: LoadEvent
                                                              ) -> None:
    output = _plan(load_event, "lost-peer", receive_timeout_s=2)
    event = {"run": output["run"], "block": 0, "worker": 0}  # workers 1 and 2 never start
    with pytest.raises(RetryableBlockError, match="timed out"):
        worker.handler(event, Context())
    outcome: list[BaseException] = []

    def waiting_worker() -> None:
        try:
            worker.handler(event, Context())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiting_worker)
    thread.start()
    time.sleep(0.5)  # it waits for its peers while the failure path cleans up
    cleanup.handler({"execution": "lost-peer", "state": output}, Context())
    thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], RunCancelled), outcome
    with pytest.raises(RunCancelled, match="already cleaned up"):
        worker.handler(event, Context())  # a worker that starts after the cleanup


def test_a_block_too_long_for_the_invocation_stops_early(load_event: LoadEvent) -> None:
    output = _plan(load_event, "short-lambda", workers=1, layers_per_block=6)
    event = {"run": output["run"], "block": 0, "worker": 0}
    with pytest.raises(BlockDeadlineError, match="lower layers_per_block"):
        worker.handler(event, Context(seconds=40.0))  # 30 s kept for the checkpoint
    cleanup.handler({"execution": "short-lambda", "state": output}, Context())


def test_a_tsv_model_folder_is_converted_and_cached(load_event: LoadEvent, storage: Storage,
                                                    small_network: Network,
                                                    tmp_path: Path) -> None:
    from fsd_inference.model.tsv import write_network_dir

    for path in write_network_dir(small_network, tmp_path / "net"):
        storage.put_file(f"models/tsv-net/{path.name}", path)
    output = _plan(load_event, "tsv-model", model="models/tsv-net/")
    assert output["run"]["model"] == small_network.fingerprint()
    assert storage.exists(f"models/{small_network.fingerprint()}.fsdm")
    assert any("cached as" in note for note in output["notes"])
    again = _plan(load_event, "tsv-model-2", model="models/tsv-net/")
    assert any("plans/ cache" in note for note in again["notes"])
    for name in ("tsv-model", "tsv-model-2"):
        cleanup.handler({"execution": name, "state": {}}, Context())
    assert run_id("tsv-model") == "tsv-model"
