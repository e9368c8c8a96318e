"""The embedded emulator's own parameters (bench/calibrate.py emulator).

Measured against the project's embedded moto (fsd_inference.local.local_aws, with its
speed-ups) in a child process: the latency of each call kind with one client (median and
p90 over many calls, as a local fsd run's workers see them when the server is free), the
loopback bandwidth, and the server's capacity in calls per second with as many client
processes as the demo has workers, each sending, receiving and deleting small messages
the way the queue channel does. What a local run adds on top (Lambda sandboxes already
warm, moto's Step Functions interpreter) comes from shared/reference/LOCAL-AWS.md.
Everything else (the SDK's CPU per call, vCPU rules) is copied from aws-model.json.
"""

from __future__ import annotations

import base64
import datetime
import json
import multiprocessing
import os
import platform
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np

from common import say
from fsd_inference.config import AwsConfig

CLIENTS = 8  # the demo's workers
LOAD_SECONDS = 8.0
BLOCK_BYTES = 2_400  # the demo's mean block (15.7 MB in 6,680 messages)


def _clients(aws: AwsConfig) -> tuple[Any, Any]:
    kw = {"endpoint_url": aws.endpoint_url, "region_name": aws.region}
    return boto3.client("sqs", **kw), boto3.client("s3", **kw)  # type: ignore[call-overload]


def _latency(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    call()
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        call()
        times.append(time.perf_counter() - tick)
    return float(np.median(times)), float(np.quantile(times, 0.9))


def latencies(aws: AwsConfig, repeat: int) -> dict[str, tuple[float, float]]:
    sqs, s3 = _clients(aws)
    queue = sqs.create_queue(QueueName=f"cal-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    body = base64.b64encode(os.urandom(BLOCK_BYTES)).decode()
    small = os.urandom(4096)
    s3.put_object(Bucket=aws.bucket, Key="cal/small", Body=small)

    def receive() -> None:
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "0", "MessageBody": body}])
        tick = time.perf_counter()
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        receive.times.append(time.perf_counter() - tick)  # type: ignore[attr-defined]
        handles = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                   for i, m in enumerate(got.get("Messages", []))]
        tick = time.perf_counter()
        sqs.delete_message_batch(QueueUrl=queue, Entries=handles)
        receive.deletes.append(time.perf_counter() - tick)  # type: ignore[attr-defined]

    receive.times, receive.deletes = [], []  # type: ignore[attr-defined]
    for _ in range(repeat):
        receive()
    result = {
        "sqs.send": _latency(lambda: sqs.send_message_batch(
            QueueUrl=queue, Entries=[{"Id": "0", "MessageBody": body}]), repeat),
        "s3.put": _latency(lambda: s3.put_object(Bucket=aws.bucket, Key="cal/x", Body=small),
                           repeat),
        "s3.get": _latency(lambda: s3.get_object(Bucket=aws.bucket, Key="cal/small")[
            "Body"].read(), repeat),
        "s3.head": _latency(lambda: s3.head_object(Bucket=aws.bucket, Key="cal/small"), repeat),
        "s3.list": _latency(lambda: s3.list_objects_v2(Bucket=aws.bucket, Prefix="cal/"),
                            repeat),
    }
    for name, times in (("sqs.receive", receive.times), ("sqs.delete", receive.deletes)):  # type: ignore[attr-defined]
        result[name] = (float(np.median(times)), float(np.quantile(times, 0.9)))
    return result


def bandwidth(aws: AwsConfig) -> float:
    _, s3 = _clients(aws)
    big = os.urandom(8 << 20)
    small_s = _latency(lambda: s3.put_object(Bucket=aws.bucket, Key="cal/b", Body=b"x"), 5)[0]
    big_s = _latency(lambda: s3.put_object(Bucket=aws.bucket, Key="cal/b", Body=big), 5)[0]
    return len(big) / max(big_s - small_s, 1e-6)


def _hammer(endpoint: str, seconds: float, out: Any) -> None:
    aws = AwsConfig(endpoint_url=endpoint, region="us-east-1", bucket="fsd-local")
    sqs, _ = _clients(aws)
    queue = sqs.create_queue(QueueName=f"load-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    body = base64.b64encode(os.urandom(BLOCK_BYTES)).decode()
    calls = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "0", "MessageBody": body}])
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        handles = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                   for i, m in enumerate(got.get("Messages", []))]
        if handles:
            sqs.delete_message_batch(QueueUrl=queue, Entries=handles)
            calls += 1
        calls += 2
    out.put(calls)


def capacity(aws: AwsConfig) -> float:
    """Calls per second the server completes with CLIENTS processes busy at once."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(aws.endpoint_url, LOAD_SECONDS, out))
               for _ in range(CLIENTS)]
    started = time.perf_counter()
    for process in workers:
        process.start()
    total = sum(out.get(timeout=120) for _ in workers)
    elapsed = time.perf_counter() - started
    for process in workers:
        process.join(timeout=30)
    return total / min(elapsed, LOAD_SECONDS + 2.0)


def calibrate_emulator(path: Path, repeat: int) -> None:
    from calibrate import AWS_MODEL, Server

    today = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = (f"measured by bench/calibrate.py emulator on {platform.node() or 'this host'}, "
             f"{today}, load average {load:.1f}")
    with Server() as aws:
        measured = latencies(aws, max(repeat, 30))
        bytes_per_s = bandwidth(aws)
        calls_per_s = capacity(aws)
    document = json.loads(AWS_MODEL.read_text(encoding="utf-8"))
    parameters = {k: v for k, v in document["parameters"].items()
                  if k.startswith(("sdk.", "compute.", "sqs.receive_batch"))}
    for name, (p50, p90) in measured.items():
        parameters[name] = {"p50": round(p50, 6), "p90": round(max(p90, p50 * 1.01), 6),
                            "source": f"{where}: one client, {max(repeat, 30)} calls",
                            "checked": today}
        say(f"{name:<12} p50 {1000 * p50:6.1f} ms  p90 {1000 * p90:6.1f} ms")
    local = "shared/reference/LOCAL-AWS.md (measured on this kind of machine, moto 5.2.5)"
    parameters.update({
        "network.connection_bytes_per_s": {"value": round(bytes_per_s), "unit": "B/s",
                                           "source": f"{where}: 8 MiB PUT minus 1-byte PUT",
                                           "checked": today},
        "emulator.server_calls_per_s": {"value": round(calls_per_s, 1), "unit": "calls/s",
                                        "source": f"{where}: {CLIENTS} client processes "
                                                  f"sending, receiving and deleting "
                                                  f"{BLOCK_BYTES}-byte blocks for "
                                                  f"{LOAD_SECONDS:g} s", "checked": today},
        "host.cores": {"value": os.cpu_count() or 1, "source": "os.cpu_count() on the "
                       "calibrating machine", "checked": today},
        "lambda.mb_per_vcpu": {"value": 1, "source": "local sandboxes are processes: any "
                               "memory setting gets a whole core (the contention model "
                               "shares host.cores among them)", "checked": today},
        "lambda.max_vcpu": {"value": 1, "source": "one process per worker", "checked": today},
        "lambda.shard_cache_miss": {"value": 0.0, "source": "cloud/worker_step.py caches "
                                    "shards in the scratch dir, which all local sandboxes "
                                    "share: every block after the first finds them",
                                    "checked": today},
        "lambda.cold_start": {"p50": 0.05, "p90": 0.08, "source": f"{local}: spawning a "
                              "handler 0.03-0.08 s; fsd run prewarms the sandboxes",
                              "checked": today},
        "stepfunctions.lambda_task": {"p50": 0.1, "p90": 0.3, "source": f"{local}: inline "
                                      "Map iterations start spread over 0.05-0.3 s",
                                      "checked": today},
        "stepfunctions.distributed_child": {"p50": 0.1, "p90": 0.3, "source": "as "
                                            "stepfunctions.lambda_task (the local run "
                                            "exercises only the inline Map)",
                                            "checked": today},
        "stepfunctions.block_overhead": {"p50": 0.05, "p90": 0.1, "source": "assumption: "
                                         "four transitions of moto's interpreter between "
                                         "blocks; not measured", "checked": today},
        "stepfunctions.transition": {"p50": 0.02, "p90": 0.04, "source": "assumption, as "
                                     "stepfunctions.block_overhead", "checked": today},
    })
    say(f"bandwidth {bytes_per_s / 2**20:.0f} MiB/s, server {calls_per_s:.0f} calls/s")
    emulator = {"name": "emulator", "checked": today,
                "description": "The embedded emulator (moto on loopback, local Lambda "
                               "sandboxes) as fsd predict --service emulator models it; "
                               "rewritten by bench/calibrate.py emulator.",
                "parameters": dict(sorted(parameters.items()))}
    path.write_text(json.dumps(emulator, indent=2) + "\n", encoding="utf-8")
    say(f"written {path}")
