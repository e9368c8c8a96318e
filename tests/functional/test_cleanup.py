"""Cleanup that cannot lose track (finding 2), against a real moto server.

An execution's queues, spilled payloads, shards and manifest are created for real; the
failures are injected at the SQS client's boundary (botocore's before-call event, the
server is the real one): DeleteQueue answers AccessDenied, once or always.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from fsd_inference.aws import s3_client, sqs_client
from fsd_inference.channels import ChannelConfig
from fsd_inference.channels.s3 import scratch_prefix
from fsd_inference.channels.sqs import TAG_EXECUTION, TAG_STACK, QueueTransport
from fsd_inference.cloud.cleanup_step import CleanupError, ForeignManifest, cleanup_step
from fsd_inference.cloud.layout import RunLayout
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.config import AwsConfig
from fsd_inference.local import local_aws
from fsd_inference.storage import S3Storage, Storage
from fsd_inference.strategy import compile_shape

WORKERS = 4


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsConfig]:
    with local_aws() as config:
        yield AwsConfig(endpoint_url=config.endpoint_url, region=config.region,
                        bucket=config.bucket, queue_prefix="fsdclean", stack="teststack")


def make_run(aws: AwsConfig, name: str) -> tuple[RunInfo, Storage, QueueTransport]:
    """What a Plan leaves: manifest, shards, queues (tagged), a spilled payload."""
    assert aws.bucket
    run = RunInfo(execution=name, bucket=aws.bucket, workers=WORKERS, channel="queue",
                  message_limit=1 << 20, receive_timeout_s=10.0, dtype="float64",
                  neurons=16, depth=2, batch=4, layers_per_block=1, blocks=2, map="inline",
                  model="0123456789abcdef", shape=compile_shape("neuron", WORKERS, 2, 4))
    storage = S3Storage(aws.bucket, s3_client(aws))
    storage.put_json(run.layout.manifest, {"run": run.to_dict(), "execution_name": name})
    for p in range(WORKERS):
        storage.put_bytes(run.layout.shard(p), b"shard")
    storage.put_bytes(f"{scratch_prefix(name)}spill/t0/l00001/s1-c0", b"frame")
    transport = QueueTransport(name, WORKERS, ChannelConfig(aws=aws))
    transport.setup()
    return run, storage, transport


def left(aws: AwsConfig, storage: Storage, name: str) -> list[str]:
    queues = sqs_client(aws).list_queues(QueueNamePrefix=f"{aws.queue_prefix}-{name}-")
    return [*queues.get("QueueUrls", []), *storage.keys(RunLayout(name).prefix),
            *storage.keys(scratch_prefix(name))]


def failing_delete_queue(aws: AwsConfig, times: int) -> tuple[Any, list[str]]:
    """A real SQS client whose first ``times`` DeleteQueue calls fail with AccessDenied."""
    client = sqs_client(aws)
    failed: list[str] = []

    def deny(params: dict[str, Any], **_: Any) -> Any:
        if len(failed) < times:
            failed.append(str(params.get("body", b"")))
            return (AWSResponse("http://injected", 403, {}, None),
                    {"Error": {"Code": "AccessDenied", "Message": "injected"},
                     "ResponseMetadata": {"HTTPStatusCode": 403}})
        return None

    client.meta.events.register("before-call.sqs.DeleteQueue", deny)
    return client, failed


def factory(client: Any) -> Any:
    def build(execution: str, workers: int, config: ChannelConfig) -> QueueTransport:
        return QueueTransport(execution, workers, config, sqs=client)

    return build


def test_queues_are_created_encrypted_and_tagged(aws: AwsConfig) -> None:
    _, storage, transport = make_run(aws, "tagged")
    client = sqs_client(aws)
    for url in transport.queue_urls:
        tags = client.list_queue_tags(QueueUrl=url)["Tags"]
        assert tags == {TAG_STACK: "teststack", TAG_EXECUTION: "tagged"}
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert attributes["Attributes"].get("SqsManagedSseEnabled") == "true"
    cleanup_step("tagged", settings=CloudSettings(aws=aws), storage=storage)
    assert left(aws, storage, "tagged") == []


def test_a_teardown_that_fails_once_is_retried_and_leaves_nothing(aws: AwsConfig) -> None:
    _, storage, _ = make_run(aws, "fails-once")
    client, failed = failing_delete_queue(aws, times=1)
    waits: list[float] = []
    result = cleanup_step("fails-once", settings=CloudSettings(aws=aws), storage=storage,
                          transport_factory=factory(client), sleep=waits.append)
    assert len(failed) == 1 and waits == [0.5], "one failure, one retry after backoff"
    assert result["transport"] == f"queue channel torn down ({WORKERS} workers)"
    assert left(aws, storage, "fails-once") == []


def test_a_persistent_failure_is_reported_and_the_manifest_kept(aws: AwsConfig) -> None:
    """The next cleanup (a Retry, the EventBridge rule, fsd cleanup) finds everything."""
    _, storage, _ = make_run(aws, "fails-always")
    client, failed = failing_delete_queue(aws, times=10**6)
    with pytest.raises(CleanupError) as caught:
        cleanup_step("fails-always", settings=CloudSettings(aws=aws), storage=storage,
                     transport_factory=factory(client), sleep=lambda _: None)
    message = str(caught.value)
    assert "tearing down the queue channel" in message and "AccessDenied" in message
    assert "fsdclean-fails-always-w" in message and "manifest" in message and \
        "is kept" in message
    assert len(failed) == 4 * WORKERS, "every queue tried on every attempt"
    remaining = left(aws, storage, "fails-always")
    assert storage.exists(RunLayout("fails-always").manifest)
    assert sum(r.startswith("http") for r in remaining) == WORKERS
    cleanup_step("fails-always", settings=CloudSettings(aws=aws), storage=storage)
    assert left(aws, storage, "fails-always") == []


def test_a_manifest_of_another_execution_deletes_nothing(aws: AwsConfig) -> None:
    run, storage, _ = make_run(aws, "owned")
    storage.put_json(run.layout.manifest, {"run": run.to_dict(), "execution_name": "other"})
    before = left(aws, storage, "owned")
    with pytest.raises(ForeignManifest, match="belongs to execution 'other'"):
        cleanup_step("owned", settings=CloudSettings(aws=aws), storage=storage)
    assert left(aws, storage, "owned") == before
    storage.put_json(run.layout.manifest, {"run": run.to_dict(), "execution_name": "owned"})
    cleanup_step("owned", settings=CloudSettings(aws=aws), storage=storage)
    assert left(aws, storage, "owned") == []


def test_no_manifest_means_no_queues_are_looked_up(aws: AwsConfig) -> None:
    """A Plan that failed (say, on a crafted request) wrote no manifest: cleanup deletes
    only the prefixes of its own run id and never asks SQS for anything."""
    assert aws.bucket
    storage = S3Storage(aws.bucket, s3_client(aws))
    storage.put_bytes(RunLayout("no-manifest").shard(0), b"partial upload")
    client, failed = failing_delete_queue(aws, times=10**6)
    result = cleanup_step("no-manifest", {"Error": "RequestError", "Cause": "x"},
                          settings=CloudSettings(aws=aws), storage=storage,
                          transport_factory=factory(client))
    assert failed == [] and result["transport"].startswith("no manifest")
    assert result["deleted_objects"] == 1 and result["failed"] is True
    assert left(aws, storage, "no-manifest") == []
