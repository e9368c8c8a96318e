"""Measure the service model's machine-dependent parameters and write them into its files.

    .venv/bin/python bench/calibrate.py sdk        # client CPU per API call -> aws-model.json
    .venv/bin/python bench/calibrate.py emulator   # the embedded moto -> emulator-model.json

``sdk``: the CPU an AWS SDK call costs its caller (botocore builds, signs and parses every
request; the published system's PublishBatch of zlib text costs tens of milliseconds).
Measured as this process's CPU time per call against a moto server running in another
process (so the server's work is not counted), for two payload sizes per API; the
prediction scales it like any CPU work (compute.lambda_core_per_host_core over the
function's vCPU share). Writes ``sdk.<api>.cpu_s`` and ``sdk.<api>.cpu_s_per_byte``.

``emulator``: the embedded emulator's own parameters for predicting a local ``fsd run``
(see bench/local_demo.py): the latency of every call kind with one client, and the
server's service time per call kind under load from several client processes (moto
serves one request at a time per core-bound interpreter). Rerun after anything that
changes the emulator's speed; takes about a minute. Both write the date and the host.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore
import numpy as np

from common import say
from fsd_inference.config import AwsConfig
from fsd_inference.local import local_aws

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fsd_inference"
AWS_MODEL = PACKAGE / "aws-model.json"
EMULATOR_MODEL = PACKAGE / "emulator-model.json"
SIZES = (1_000, 200_000)


def _serve(ready: Any, stop: Any) -> None:
    with local_aws() as config:
        ready.put(config.endpoint_url)
        stop.wait()


class Server:
    """The embedded moto server in a child process (its CPU is not ours)."""

    def __enter__(self) -> AwsConfig:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stop = ctx.Queue(), ctx.Event()
        self.process = ctx.Process(target=_serve, args=(self.ready, self.stop), daemon=True)
        self.process.start()
        endpoint = self.ready.get(timeout=120)
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1")
        return AwsConfig(endpoint_url=endpoint, region="us-east-1", bucket="fsd-local")

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(timeout=30)


def published_text(size: int, rng: np.random.Generator) -> str:
    """A payload as the published system sends it: str() of zlib-compressed float32s."""
    raw = rng.random(size).astype(np.float32).tobytes()
    return str(zlib.compress(raw, 3))[:size]


def cpu_per_call(call: Callable[[], object], repeat: int) -> float:
    call()
    started = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - started) / repeat


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    (b0, t0), (b1, t1) = points
    slope = max(0.0, (t1 - t0) / (b1 - b0))
    return max(0.0, t0 - slope * b0), slope


@dataclass(frozen=True)
class Clients:
    s3: Any
    sqs: Any
    sns: Any
    ddb: Any
    bucket: str
    queue: str
    topic: str
    table: str

    @classmethod
    def create(cls, aws: AwsConfig) -> Clients:
        kw = {"endpoint_url": aws.endpoint_url, "region_name": aws.region}
        s3, sqs, sns, ddb = (boto3.client(s, **kw)  # type: ignore[call-overload]
                             for s in ("s3", "sqs", "sns", "dynamodb"))
        name = f"cal-{uuid.uuid4().hex[:8]}"
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
        return cls(s3, sqs, sns, ddb, str(aws.bucket),
                   sqs.create_queue(QueueName=name)["QueueUrl"],
                   sns.create_topic(Name=name)["TopicArn"], name)


def _sized(c: Clients, size: int, repeat: int, rng: np.random.Generator) -> dict[str, float]:
    """CPU per call of the payload-carrying APIs with ``size`` bytes in all."""
    body = os.urandom(size)
    key = f"cal/{size}"
    entries = [{"Id": str(i), "MessageBody": body.hex()[:size // 10]} for i in range(10)]
    attributes = {name: {"DataType": "String", "StringValue": "1"} for name in (
        "targetWorkerID", "sourceWorkerID", "messageLayer", "coordinationFlag",
        "numberOfChunks")}
    text = published_text(size // 10, rng)
    publish = [{"Id": str(i), "Message": text, "MessageAttributes": attributes}
               for i in range(10)]
    costs = {
        "s3.put": cpu_per_call(lambda: c.s3.put_object(Bucket=c.bucket, Key=key, Body=body),
                               repeat),
        "s3.get": cpu_per_call(lambda: c.s3.get_object(Bucket=c.bucket, Key=key)["Body"].read(),
                               repeat),
        "sqs.send": cpu_per_call(lambda: c.sqs.send_message_batch(QueueUrl=c.queue,
                                                                  Entries=entries), repeat),
        "sns.publish": cpu_per_call(lambda: c.sns.publish_batch(
            TopicArn=c.topic, PublishBatchRequestEntries=publish), repeat),
    }
    spent = 0.0
    for _ in range(repeat):
        c.sqs.send_message_batch(QueueUrl=c.queue, Entries=entries)
        tick = time.process_time()
        got = c.sqs.receive_message(QueueUrl=c.queue, MaxNumberOfMessages=10)
        spent += time.process_time() - tick
        handles = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                   for i, m in enumerate(got.get("Messages", []))]
        if handles:
            c.sqs.delete_message_batch(QueueUrl=c.queue, Entries=handles)
    costs["sqs.receive"] = spent / repeat
    return costs


def sdk_costs(aws: AwsConfig, repeat: int) -> dict[str, tuple[float, float]]:
    """API -> (CPU seconds per call, CPU seconds per payload byte)."""
    rng = np.random.default_rng(0)
    c = Clients.create(aws)
    points: dict[str, list[tuple[int, float]]] = {}
    for size in SIZES:
        for name, seconds in _sized(c, size, repeat, rng).items():
            points.setdefault(name, []).append((size, seconds))
        say(f"payload {size:,} bytes measured")
    result = {name: fit(values) for name, values in points.items()}
    gone = [{"Id": str(i), "ReceiptHandle": f"gone-{i}"} for i in range(10)]
    fixed: dict[str, Callable[[], object]] = {
        "s3.list": lambda: c.s3.list_objects_v2(Bucket=c.bucket, Prefix="cal/"),
        "s3.head": lambda: c.s3.head_object(Bucket=c.bucket, Key=f"cal/{SIZES[0]}"),
        "sqs.delete": lambda: c.sqs.delete_message_batch(QueueUrl=c.queue, Entries=gone),
        "dynamodb.query": lambda: c.ddb.query(
            TableName=c.table, KeyConditionExpression="k = :k",
            ExpressionAttributeValues={":k": {"S": "L1T2"}}),
    }
    for name, call in fixed.items():
        result[name] = (cpu_per_call(call, repeat), 0.0)
    return result


def scipy_version() -> str:
    import scipy

    return str(scipy.__version__)


def row_extract_cost(repeat: int) -> float:
    """CPU seconds per row of the published system's row extraction (getrow per row,
    vstack, eliminate_zeros, tocoo: its send_row_chunker), on a worker's activations of
    128 neurons x 10,000 inputs with 365 nonzeros per row (its 1024 x 8 averages)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    h = sp.random(128, 10_000, density=365 / 10_000, format="csr", random_state=1,
                  dtype=np.float32)
    chosen = rng.choice(128, size=64, replace=False)

    def extract() -> None:
        stacked = sp.vstack([h.getrow(int(r)) for r in chosen])
        stacked.eliminate_zeros()
        stacked.tocoo()

    return cpu_per_call(extract, max(1, repeat // 4)) / chosen.size


def write_sdk(costs: dict[str, tuple[float, float]], path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    today = datetime.date.today().isoformat()
    source = (f"measured by bench/calibrate.py sdk on {platform.node() or 'this host'} "
              f"({platform.processor() or platform.machine()}, Python "
              f"{platform.python_version()}, botocore {botocore.__version__}): client CPU time "
              f"per call against the embedded moto server in another process, plain HTTP; "
              f"payloads {SIZES[0]:,} and {SIZES[1]:,} bytes")
    for name, (base, per_byte) in sorted(costs.items()):
        document["parameters"][f"sdk.{name}.cpu_s"] = {
            "value": round(base, 6), "unit": "s", "source": source, "checked": today}
        document["parameters"][f"sdk.{name}.cpu_s_per_byte"] = {
            "value": float(f"{per_byte:.4g}"), "unit": "s/B", "source": source,
            "checked": today}
        say(f"{name:<16} {1000 * base:6.2f} ms per call + {1e9 * per_byte:7.2f} ns per byte")
    row = row_extract_cost(40)
    document["parameters"]["published.row_extract_cpu_s"] = {
        "value": float(f"{row:.3g}"), "unit": "s/row", "checked": today,
        "source": f"measured by bench/calibrate.py sdk on {platform.node() or 'this host'} "
                  f"(SciPy {scipy_version()}): CPU time of the published system's row "
                  f"extraction (getrow per row, vstack, eliminate_zeros, tocoo), 64 rows of "
                  f"365 nonzeros out of 128 x 10,000"}
    say(f"published row extraction {1e6 * row:.1f} us per row")
    document["checked"] = today
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sdk", "emulator"))
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    if args.what == "sdk":
        with Server() as aws:
            write_sdk(sdk_costs(aws, args.repeat), AWS_MODEL)
        say(f"written to {AWS_MODEL}")
        return
    from calibrate_emulator import calibrate_emulator

    calibrate_emulator(EMULATOR_MODEL, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
