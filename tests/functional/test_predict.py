"""fsd predict's exact counts against real runs on the embedded moto server.

The same network, input, partition, execution id and bucket go to a real
``run_inference`` over the queue (or object) channel and to the predictor; everything
the prediction calls exact must equal what the run recorded, worker by worker and layer
by layer, and the modelled receive calls must be plausible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.channels import ChannelConfig
from fsd_inference.config import AwsConfig
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import read_input, write_input
from fsd_inference.predict.document import build_document
from fsd_inference.predict.params import load_service_model
from fsd_inference.predict.predictor import PredictOptions, predict

KiB = 1024
ROWS = 400
WORKERS = 4
TRAFFIC = ("messages_sent", "frames_sent", "bytes_sent", "messages_received",
           "frames_received", "bytes_received")


@pytest.fixture(scope="module")
def small() -> tuple[Network, sp.csr_matrix]:
    network = generate(GeneratorParams(1024, 4, seed=3))
    inputs = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:ROWS])
    return network, inputs


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run and prediction share one partition cache (and so one partition)."""
    monkeypatch.setenv("FSD_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache"


def _measured_and_predicted(network: Network, inputs: sp.csr_matrix, aws: AwsConfig,
                            channel: str, limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
    options = InferOptions(workers=WORKERS, channel=channel, partition="hypergraph",
                           config=ChannelConfig(max_message_bytes=limit, aws=aws))
    measured = run_inference(network, inputs, options).metrics_document()
    assert aws.bucket
    prediction = predict(network, inputs, PredictOptions(
        workers=WORKERS, channel=channel, message_limit=limit, execution=measured["execution"],
        bucket=aws.bucket, draws=20), load_service_model())
    return measured, build_document(prediction)


@pytest.mark.parametrize("limit", [256 * KiB, 12 * KiB])
def test_queue_counts_equal_a_real_run(small: tuple[Network, sp.csr_matrix], aws: AwsConfig,
                                       cache: Path, limit: int) -> None:
    network, inputs = small
    measured, predicted = _measured_and_predicted(network, inputs, aws, "queue", limit)
    assert predicted["categories"] == measured["categories"]
    spilled = 0
    for real, guess, detail in zip(measured["per_worker"], predicted["per_worker"],
                                   predicted["predicted"]["per_worker"], strict=True):
        for layer_real, layer_guess in zip(real["layers"], guess["layers"], strict=True):
            assert {k: layer_real[k] for k in TRAFFIC} == {k: layer_guess[k] for k in TRAFFIC}
        exact = detail["channel_api_calls"]["exact"]
        for api in ("SQS.SendMessageBatch", "S3.PutObject", "S3.GetObject"):
            assert real["api_calls"].get(api, 0) == exact.get(api, 0), api
        assert (real["billed_requests"]["SQS.SendMessageBatch"]
                == guess["billed_requests"]["SQS.SendMessageBatch"])
        spilled += exact.get("S3.PutObject", 0)
        # modelled: at least one call per ten messages, and not wildly more than measured
        receives = detail["channel_api_calls"]["modeled"]["SQS.ReceiveMessage"]
        messages = real["totals"]["messages_received"]
        assert math.ceil(messages / 10) <= receives <= 4 * real["api_calls"]["SQS.ReceiveMessage"]
        # deletes go in batches of ten, the rest when the block ends (one block of 4 layers)
        deletes = detail["channel_api_calls"]["modeled"]["SQS.DeleteMessageBatch"]
        assert deletes == real["api_calls"]["SQS.DeleteMessageBatch"] == math.ceil(messages / 10)
    assert (spilled > 0) == (limit < 64 * KiB)  # the small limit exercises the S3 spill
    assert predicted["summary"]["totals"]["bytes_sent"] == measured["summary"]["totals"][
        "bytes_sent"]


def test_object_counts_equal_a_real_run(small: tuple[Network, sp.csr_matrix], aws: AwsConfig,
                                        cache: Path) -> None:
    network, inputs = small
    measured, predicted = _measured_and_predicted(network, inputs, aws, "object", 1 << 20)
    for real, guess, detail in zip(measured["per_worker"], predicted["per_worker"],
                                   predicted["predicted"]["per_worker"], strict=True):
        for layer_real, layer_guess in zip(real["layers"], guess["layers"], strict=True):
            assert {k: layer_real[k] for k in TRAFFIC} == {k: layer_guess[k] for k in TRAFFIC}
        exact = detail["channel_api_calls"]["exact"]
        assert real["api_calls"]["S3.PutObject"] == exact["S3.PutObject"]
        # every found object is one GET; probes that found nothing add to the real count
        assert real["api_calls"]["S3.GetObject"] >= exact["S3.GetObject"]


def test_cli_writes_the_metrics_shaped_document_and_plot(
        small: tuple[Network, sp.csr_matrix], tmp_path: Path,
        run_fsd: Callable[..., Any]) -> None:
    network, inputs = small
    save_network(network, tmp_path / "net.fsdm")
    write_input(inputs, tmp_path / "x.tsv")
    done = run_fsd("predict", "--model", "net.fsdm", "--input", "x.tsv", "--workers", "3",
                   "--channel", "object", "--draws", "20", "--region", "eu-west-1",
                   "--json", "p.json", "--plot", "p.png")
    assert done.returncode == 0, done.stderr
    assert "predicted makespan: p50" in done.stdout
    document = json.loads((tmp_path / "p.json").read_text())
    predicted = document["predicted"]
    assert predicted["time_s"]["p50"] <= predicted["time_s"]["p95"]
    assert predicted["cost"]["prices"]["region"] == "eu-west-1"
    assert predicted["cost"]["total_usd"] == pytest.approx(
        sum(item["usd"] for item in predicted["cost"]["items"].values()))
    assert len(document["per_worker"]) == 3
    assert {len(w["layers"]) for w in document["per_worker"]} == {network.depth}
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    worker = predicted["per_worker"][0]
    assert all(worker[k] >= 0 for k in ("compute_s", "send_s", "wait_s", "other_s"))
    assert np.isfinite(predicted["time_s"]["mean"])


@pytest.mark.parametrize(("args", "fragment"), [
    (("--workers", "0"), "--workers"),
    (("--workers", "2", "--memory", "64"), "--memory"),
    (("--workers", "2", "--service", "missing.json"), "missing.json"),
    (("--workers", "2", "--draws", "3"), "--draws"),
])
def test_bad_options_end_with_one_clear_line(
        small: tuple[Network, sp.csr_matrix], tmp_path: Path, run_fsd: Callable[..., Any],
        assert_clean_error: Callable[..., None], args: tuple[str, ...], fragment: str) -> None:
    network, inputs = small
    save_network(network, tmp_path / "net.fsdm")
    write_input(inputs[:20], tmp_path / "x.tsv")
    done = run_fsd("predict", "--model", "net.fsdm", "--input", "x.tsv", *args)
    assert_clean_error(done, fragment)
    assert not (tmp_path / "p.json").exists()
