"""One suite for every channel: memory, queue (SQS + S3 spillover) and object (S3).

The cloud channels run against a real moto server on loopback (the session fixture
``aws``), through the same clients, timeouts and accounting hooks as against AWS.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
import scipy.sparse as sp
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.aws import billed_sqs_requests, s3_client, sqs_client
from fsd_inference.channels import TRANSPORTS, ChannelConfig, ChannelError, transport_class
from fsd_inference.channels.base import Channel, ChannelTimeout, Transport
from fsd_inference.channels.codec import Block, encode_body, encode_frames, frame_overhead
from fsd_inference.channels.faults import Faults, faulty_factory
from fsd_inference.channels.memory import MemoryTransport
from fsd_inference.channels.s3 import (
    UNCHUNKED,
    Discovery,
    ObjectChannel,
    object_key,
    scratch_prefix,
)
from fsd_inference.channels.sqs import (
    Pointer,
    QueueChannel,
    QueueTransport,
    inline_limit,
    queue_name,
)
from fsd_inference.cli import main
from fsd_inference.config import AwsConfig
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_categories, read_input, write_input

CHANNELS = ["memory", "queue", "object"]
KiB = 1024
MiB = 1024 * KiB
LIMITS = [256 * KiB, MiB]


# ----------------------------------------------------------------------------- helpers


@dataclass
class Rig:
    """One execution's transport and the channels of its workers, in this process."""

    name: str
    transport: Transport
    aws: AwsConfig
    channels: dict[int, Channel] = field(default_factory=dict)

    def __getitem__(self, worker: int) -> Channel:
        if worker not in self.channels:
            self.channels[worker] = self.transport.channel(worker, WorkerMetrics(worker))
        return self.channels[worker]

    @property
    def execution(self) -> str:
        return self.transport.execution

    def inject(self, target: int, layer: int, source: int, frame: bytes) -> None:
        """Deliver raw bytes to ``target`` the way the transport would, bypassing _put."""
        if isinstance(self.transport, MemoryTransport):
            self.transport.inboxes[target].put(frame)
        elif isinstance(self.transport, QueueTransport):
            sqs_client(self.aws).send_message(QueueUrl=self.transport.queue_urls[target],
                                              MessageBody=base64.b64encode(frame).decode())
        else:
            s3_client(self.aws).put_object(
                Bucket=self.bucket, Key=object_key(self.execution, (layer, 0), target, source, 0),
                Body=frame)

    @property
    def bucket(self) -> str:
        assert self.aws.bucket
        return self.aws.bucket

    def scratch_keys(self) -> list[str]:
        listing = s3_client(self.aws).list_objects_v2(Bucket=self.bucket,
                                                      Prefix=scratch_prefix(self.execution))
        return [item["Key"] for item in listing.get("Contents", [])]


MakeRig = Callable[..., Rig]


@pytest.fixture
def rig(aws: AwsConfig) -> Iterator[MakeRig]:
    made: list[Rig] = []

    def make(name: str, workers: int = 3, limit: int = MiB, timeout: float = 20.0) -> Rig:
        config = ChannelConfig(max_message_bytes=limit, receive_timeout_s=timeout, poll_s=0.5,
                               aws=aws)
        transport = transport_class(name)(f"fsd-test-{uuid.uuid4().hex[:10]}", workers, config)
        transport.setup()
        made.append(Rig(name, transport, aws))
        return made[-1]

    yield make
    for each in made:
        for channel in each.channels.values():
            channel.close()
        each.transport.teardown()


def random_block(seed: int, rows: int, width: int, density: float, dtype: str = "float64"
                 ) -> Block:
    rng = np.random.default_rng(seed)
    values = sp.random(rows, width, density=density, format="csr", random_state=rng)
    values.data = (values.data * 40 - 4).astype(dtype)
    values = sp.csr_matrix(values, dtype=dtype)
    values.eliminate_zeros()
    ids = np.sort(rng.choice(100_000, size=rows, replace=False)).astype(np.int64)
    return Block(ids, values)


def empty_block(width: int, dtype: str = "float64") -> Block:
    return Block(np.zeros(0, np.int64), sp.csr_matrix((0, width), dtype=dtype))


def assert_same_block(got: Block, sent: Block) -> None:
    np.testing.assert_array_equal(got.rows, sent.rows)
    assert got.values.shape == sent.values.shape
    assert got.values.dtype == sent.values.dtype
    a, b = sp.csr_matrix(got.values), sp.csr_matrix(sent.values)
    a.sort_indices()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.data.tobytes() == b.data.tobytes()


def raw_frame(execution: str, layer: int, source: int, target: int, size: int) -> bytes:
    """A well-formed frame of exactly ``size`` bytes (its body is random, not a block)."""
    body = np.random.default_rng(size).bytes(size - frame_overhead(execution))
    (frame,) = encode_frames(execution, layer, source, target, body, UNCHUNKED)
    assert len(frame) == size
    return frame


def collect(channel: Channel, layer: int, sources: list[int], count: int,
            timeout: float = 20.0) -> list[bytes]:
    """Raw frames through ``_get`` (the transport contract, below block decoding)."""
    if isinstance(channel, ObjectChannel):
        channel.expect(layer, sources)
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        frames += channel._get(1.0)
    return frames


def b64_length(frame_bytes: int) -> int:
    return 4 * math.ceil(frame_bytes / 3)


# ----------------------------------------------------------------------------- the suite


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CHANNELS)
def test_random_blocks_round_trip_exactly(rig: MakeRig, name: str, dtype: str) -> None:
    r = rig(name)
    sent = {(layer, source): random_block(10 * layer + source, 300, 120, 0.1, dtype)
            for layer in (1, 2) for source in (0, 2)}
    for (layer, source), block in sent.items():
        r[source].send(layer, 1, block)
    for source in (0, 2):
        r[source].flush()
    for layer in (1, 2):
        got = r[1].receive(layer, [0, 2])
        for source in (0, 2):
            assert_same_block(got[source], sent[(layer, source)])
    assert r[1].metrics.totals()["messages_received"] == 4


@pytest.mark.parametrize("name", CHANNELS)
def test_empty_marker_round_trips(rig: MakeRig, name: str) -> None:
    r = rig(name, workers=2)
    r[0].send(1, 1, empty_block(77))
    r[0].flush()
    got = r[1].receive(1, [0])[0]
    assert got.empty
    assert got.values.shape == (0, 77)


@pytest.mark.parametrize("limit", LIMITS, ids=["256KiB", "1MiB"])
@pytest.mark.parametrize("name", CHANNELS)
def test_frames_at_and_just_over_the_message_limit(rig: MakeRig, name: str,
                                                   limit: int) -> None:
    """The largest frame whose base64 form fits the SQS limit goes inline; one byte more
    is spilled to S3 (queue), and both arrive intact on every channel."""
    r = rig(name, workers=2, limit=limit)
    at_limit = raw_frame(r.execution, 1, 0, 1, inline_limit(limit))
    over = raw_frame(r.execution, 2, 0, 1, inline_limit(limit) + 1)
    assert b64_length(len(at_limit)) == limit < b64_length(len(over))

    r[0]._put(1, [at_limit])
    r[0].flush()
    assert collect(r[1], 1, [0], 1) == [at_limit]
    r[0]._put(1, [over])
    r[0].flush()
    assert collect(r[1], 2, [0], 1) == [over]

    sender, receiver = r[0].metrics, r[1].metrics
    if name == "queue":
        assert sender.api_calls["SQS.SendMessageBatch"] == 2
        assert sender.api_calls["S3.PutObject"] == 1  # only the frame over the limit
        assert receiver.api_calls["S3.GetObject"] == 1
        assert [k.split("/spill/")[1] for k in r.scratch_keys()] == ["t1/l00002-p0000/s0-c0"]
    if name == "object":
        assert sender.api_calls["S3.PutObject"] == 2
        assert sender.api_bytes["S3.PutObject sent"] == len(at_limit) + len(over)


@pytest.mark.parametrize("name", CHANNELS)
def test_block_over_the_limit_is_spilled_read_and_removed_at_teardown(
        rig: MakeRig, name: str) -> None:
    r = rig(name, workers=2, limit=256 * KiB)
    block = random_block(5, 400, 200, 0.5, "float64")  # ~ 40,000 values: > 256 KiB
    r[0].send(3, 1, block)
    r[0].flush()
    assert r[0].metrics.layer(3).bytes_sent > 256 * KiB
    assert_same_block(r[1].receive(3, [0])[0], block)
    if name == "memory":
        assert r[0].metrics.layer(3).frames_sent >= 2  # chunked to the limit
        return
    assert r[0].metrics.layer(3).frames_sent == 1  # one frame per block
    keys = r.scratch_keys()
    assert len(keys) == 1
    assert ("/spill/" in keys[0]) == (name == "queue")
    r.transport.teardown()
    assert r.scratch_keys() == []
    r.transport.teardown()  # idempotent


@pytest.mark.parametrize("name", CHANNELS)
def test_duplicated_frames_are_dropped(rig: MakeRig, name: str) -> None:
    r = rig(name, workers=2)
    block = random_block(1, 50, 30, 0.2)
    r[0].send(1, 1, block)
    r[0].send(1, 1, block)  # at-least-once delivery: the same message twice
    r[0].flush()
    r[0].send(2, 1, block)
    r[0].flush()
    assert_same_block(r[1].receive(1, [0])[0], block)
    assert_same_block(r[1].receive(2, [0])[0], block)
    m = r[1].metrics
    assert m.layer(1).messages_received == 1
    # the object channel's second PUT overwrote the same key: nothing to drop
    assert m.layer(1).duplicates_dropped == (0 if name == "object" else 1)


@pytest.mark.parametrize("name", CHANNELS)
def test_early_messages_for_later_layers_are_buffered(rig: MakeRig, name: str) -> None:
    r = rig(name)
    blocks = {layer: random_block(layer, 40, 20, 0.3) for layer in (1, 2, 3)}
    for layer in (3, 2, 1):  # the sender runs ahead of the receiver
        r[0].send(layer, 1, blocks[layer])
        r[2].send(layer, 1, blocks[layer])
    r[0].flush()
    r[2].flush()
    for layer in (1, 2, 3):
        got = r[1].receive(layer, [0, 2])
        assert_same_block(got[0], blocks[layer])
        assert_same_block(got[2], blocks[layer])


@pytest.mark.parametrize("name", CHANNELS)
def test_parts_of_a_layer_are_separate_messages(rig: MakeRig, name: str) -> None:
    """Messages are keyed by (layer, part, source): parts sent out of order, each over
    the limit (spilled, or chunked), arrive apart and are received in any order."""
    r = rig(name, workers=2, limit=256 * KiB)
    blocks = {part: random_block(20 + part, 400, 200, 0.5) for part in (0, 1, 2)}
    for part in (2, 0, 1):
        r[0].send(5, 1, blocks[part], part)
    r[0].flush()
    for part in (1, 0, 2):
        assert_same_block(r[1].receive(5, [0], part=part)[0], blocks[part])
    assert r[1].metrics.layer(5).messages_received == 3
    with pytest.raises(ChannelTimeout, match=r"layer 5: .* \[0\] \(part 1\)"):
        r[1].receive(5, [0], timeout=0.5, part=1)  # consumed: a part is delivered once


@pytest.mark.parametrize("name", CHANNELS)
def test_a_corrupt_frame_is_rejected_naming_worker_and_layer(rig: MakeRig, name: str) -> None:
    r = rig(name, workers=3)
    (frame,) = encode_frames(r.execution, 4, 0, 2, encode_body(random_block(2, 30, 10, 0.3)),
                             UNCHUNKED)
    damaged = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    r.inject(2, 4, 0, damaged)
    with pytest.raises(ChannelError, match=r"worker 2, layer 4: rejected a frame.*checksum"):
        r[2].receive(4, [0], timeout=10)


@pytest.mark.parametrize("name", CHANNELS)
def test_a_missing_message_times_out_instead_of_hanging(rig: MakeRig, name: str) -> None:
    r = rig(name)
    r[0].send(5, 1, random_block(3, 20, 10, 0.3))
    r[0].flush()
    started = time.monotonic()
    with pytest.raises(ChannelTimeout, match=r"worker 1, layer 5: timed out after 1.5 s "
                                             r"waiting for source worker\(s\) \[2\]"):
        r[1].receive(5, [0, 2], timeout=1.5)
    assert time.monotonic() - started < 4.0


SIZES = [(5, 4, 0.5), (300, 100, 0.4), (60, 100, 1.0), (700, 100, 0.45)]  # ~0 to ~250 KB


@pytest.mark.parametrize("name", CHANNELS)
def test_accounting_matches_an_independent_count(rig: MakeRig, name: str) -> None:
    r = rig(name, workers=2)
    for layer, (rows, width, density) in enumerate(SIZES, start=1):
        r[0].send(layer, 1, random_block(layer, rows, width, density))
        r[0].flush()
    for layer in range(1, len(SIZES) + 1):
        r[1].receive(layer, [0])
    frames = [r[0].metrics.layer(k).bytes_sent for k in range(1, len(SIZES) + 1)]
    sender, receiver = r[0].metrics, r[1].metrics
    if name == "memory":
        assert not sender.api_calls and not receiver.api_calls
    elif name == "queue":
        bodies = [b64_length(n) for n in frames]
        assert dict(sender.api_calls) == {"SQS.SendMessageBatch": len(SIZES)}
        assert dict(sender.billed_requests) == {
            "SQS.SendMessageBatch": sum(math.ceil(b / (64 * KiB)) for b in bodies)}
        assert sender.api_bytes["SQS.SendMessageBatch sent"] > sum(bodies)
        receives = receiver.api_calls["SQS.ReceiveMessage"]
        billed = receiver.billed_requests["SQS.ReceiveMessage"]
        assert math.ceil(sum(bodies) / (64 * KiB)) <= billed
        assert billed <= sum(math.ceil(b / (64 * KiB)) for b in bodies) + receives
        assert receiver.api_calls["SQS.DeleteMessageBatch"] <= receives
        assert receiver.api_bytes["SQS.ReceiveMessage received"] > sum(bodies)
    else:
        assert dict(sender.api_calls) == {"S3.PutObject": len(SIZES)}
        assert sender.api_bytes["S3.PutObject sent"] == sum(frames)
        assert dict(receiver.api_calls) == {"S3.GetObject": len(SIZES)}  # nothing missed
        assert receiver.api_bytes["S3.GetObject received"] == sum(frames)


def test_read_messages_are_deleted_in_full_batches(rig: MakeRig) -> None:
    """The queue channel deletes what it read ten receipts at a time, the rest at flush:
    22 messages cost 3 DeleteMessageBatch calls however many receives read them, and
    nothing is left in the queue, visible or in flight."""
    r = rig("queue", workers=3)
    for layer in range(1, 12):
        for source in (0, 2):
            r[source].send(layer, 1, empty_block(5))
    for source in (0, 2):
        r[source].flush()
    for layer in range(1, 12):
        r[1].receive(layer, [0, 2])
    calls = r[1].metrics.api_calls
    assert calls["SQS.DeleteMessageBatch"] <= 2 < calls["SQS.ReceiveMessage"]
    r[1].flush()
    assert calls["SQS.DeleteMessageBatch"] == 3
    assert isinstance(r.transport, QueueTransport)
    left = sqs_client(r.aws).get_queue_attributes(
        QueueUrl=r.transport.queue_urls[1],
        AttributeNames=["ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0",
                    "ApproximateNumberOfMessagesNotVisible": "0"}


def test_sqs_billing_counts_each_started_64_kib() -> None:
    assert [billed_sqs_requests(n) for n in (0, 1, 64 * KiB, 64 * KiB + 1, 256 * KiB)] == [
        1, 1, 1, 2, 4]


# ----------------------------------------------------------------------------- queue only


def test_batches_pack_ten_entries_within_the_byte_limit(rig: MakeRig) -> None:
    r = rig("queue", workers=2, limit=256 * KiB)
    small = [raw_frame(r.execution, 1, 0, 1, 100 + i) for i in range(25)]
    third = inline_limit(256 * KiB) // 3  # three such bodies fill a batch exactly
    large = [raw_frame(r.execution, 2, 0, 1, third - i) for i in range(5)]
    r[0]._put(1, small)
    r[0].flush()
    assert r[0].metrics.api_calls["SQS.SendMessageBatch"] == 3  # 10 + 10 + 5
    r[0]._put(1, large)
    r[0].flush()
    assert r[0].metrics.api_calls["SQS.SendMessageBatch"] == 3 + 2  # 3 + 2 by size
    assert sorted(collect(r[1], 1, [0], 30)) == sorted(small + large)


def test_throttling_and_5xx_are_retried_with_backoff(rig: MakeRig, aws: AwsConfig) -> None:
    r = rig("queue", workers=2)
    metrics = WorkerMetrics(0)
    client = sqs_client(aws, metrics)
    failures = iter([503, 500])

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield b""

    def fail_first_attempts(request: Any, **_: Any) -> AWSResponse | None:
        status = next(failures, None)
        return None if status is None else AWSResponse(request.url, status, HTTPHeaders(), Raw())

    hook = cast(Callable[..., None], fail_first_attempts)  # a response short-circuits the send
    client.meta.events.register("before-send.sqs.SendMessageBatch", hook)
    assert isinstance(r.transport, QueueTransport)
    sender = QueueChannel(r.execution, 0, r.transport.config, r.transport.queue_urls,
                          metrics, sqs=client)
    block = random_block(4, 20, 10, 0.3)
    sender.send(1, 1, block)
    sender.close()
    assert_same_block(r[1].receive(1, [0])[0], block)
    assert metrics.api_calls["SQS.SendMessageBatch"] == 3  # two failed attempts + success
    assert metrics.billed_requests["SQS.SendMessageBatch"] == 1  # one call


def test_a_deleted_queue_gives_a_clear_error(rig: MakeRig) -> None:
    r = rig("queue", workers=2)
    receiver, sender = r[1], r[0]
    r.transport.teardown()  # cleanup ran while the workers are alive
    with pytest.raises(ChannelError, match=r"worker 1, layer 3: receiving: queue .*-w1 no "
                                           r"longer exists"):
        receiver.receive(3, [0], timeout=5)
    sender.send(3, 1, random_block(1, 5, 5, 0.5))
    with pytest.raises(ChannelError, match=r"worker 0, layer 3: sending to worker 1: queue "
                                           r".*-w1 no longer exists"):
        sender.flush()


def test_a_bad_spill_pointer_or_body_is_rejected(rig: MakeRig, aws: AwsConfig) -> None:
    r = rig("queue", workers=2)
    assert isinstance(r.transport, QueueTransport)
    url = r.transport.queue_urls[1]
    s3_client(aws).put_object(Bucket=r.bucket, Key="scratch/x", Body=b"frame")
    pointer = Pointer(r.bucket, "scratch/x", 5, hashlib.sha256(b"other").hexdigest(), 6, 0)
    sqs_client(aws).send_message(QueueUrl=url, MessageBody=pointer.to_body())
    with pytest.raises(ChannelError, match=r"worker 1, layer 6: spilled payload "
                                           r"s3://.*/scratch/x from worker 0: checksum"):
        r[1].receive(6, [0], timeout=10)
    sqs_client(aws).send_message(QueueUrl=url, MessageBody="not base64 !")
    with pytest.raises(ChannelError, match=r"worker 1, layer 7: rejected a message"):
        r[1].receive(7, [0], timeout=10)


def test_a_queue_transport_rebuilt_elsewhere_finds_its_queues(rig: MakeRig) -> None:
    r = rig("queue", workers=3)
    assert isinstance(r.transport, QueueTransport)
    # what a worker in another process (a Lambda invocation) has: no setup() there
    rebuilt = QueueTransport(r.execution, 3, r.transport.config)
    channel = rebuilt.channel(2)
    try:
        assert isinstance(channel, QueueChannel)
        assert channel.queue_urls == r.transport.queue_urls
        assert dict(channel.metrics.api_calls) == {"SQS.GetQueueUrl": 1}
        block = random_block(9, 10, 10, 0.3)
        channel.send(1, 1, block)
        channel.flush()
        assert_same_block(r[1].receive(1, [2])[2], block)
    finally:
        channel.close()
    r.transport.teardown()
    with pytest.raises(ChannelError, match=r"worker 0, layer 0: queue .*-w0 does not exist"):
        QueueTransport(r.execution, 3, r.transport.config).channel(0)


def test_queue_names_carry_the_execution_and_fit_80_characters() -> None:
    long_a, long_b = "x" * 80 + "-a", "x" * 80 + "-b"
    names = {queue_name("fsd", ex, w) for ex in (long_a, long_b) for w in (0, 61)}
    assert len(names) == 4 and all(len(n) <= 80 for n in names)
    assert queue_name("fsd", "fsd-0123456789ab", 7) == "fsd-fsd-0123456789ab-w7"


# ----------------------------------------------------------------------------- object only


@pytest.mark.parametrize("discovery", ["get", "list"])
def test_object_discovery_calls(rig: MakeRig, aws: AwsConfig, discovery: Discovery) -> None:
    r = rig("object", workers=4)
    for source in (0, 2, 3):
        r[source].send(1, 1, random_block(source, 10, 10, 0.3))
        r[source].flush()
    metrics = WorkerMetrics(1)
    receiver = ObjectChannel(r.execution, 1, r.transport.config, metrics, discovery=discovery)
    try:
        assert set(receiver.receive(1, [0, 2, 3])) == {0, 2, 3}
    finally:
        receiver.close()
    expected = {"S3.GetObject": 3}
    if discovery == "list":
        expected["S3.ListObjectsV2"] = 1
    assert dict(metrics.api_calls) == expected


# ----------------------------------------------------------------------------- end to end


@functools.cache
def small_problem() -> tuple[Any, sp.csr_matrix]:
    network = generate(GeneratorParams(1024, 6, 3))
    return network, read_input(sample_input_path(), neurons=1024)[:300]


def run_cli(tmp_path: Any, channel: str) -> np.ndarray:
    network, x = small_problem()
    model, inputs, out = tmp_path / "net.fsdm", tmp_path / "in.tsv", tmp_path / "cats.txt"
    save_network(network, model)
    write_input(x, inputs)
    code = main(["infer", "--model", str(model), "--input", str(inputs), "--workers", "3",
                 "--channel", channel, "--partition", "random", "--timeout", "60",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return read_categories(out)


def test_fsd_infer_over_the_queue_channel_matches_the_reference(tmp_path: Any,
                                                                aws: AwsConfig) -> None:
    network, x = small_problem()
    expected = infer(network, x).categories
    assert 0 < expected.size < x.shape[0]
    np.testing.assert_array_equal(run_cli(tmp_path, "queue"), expected)


def test_fsd_infer_over_the_object_channel_starts_its_own_moto(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE", "FSD_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    network, x = small_problem()
    np.testing.assert_array_equal(run_cli(tmp_path, "object"), infer(network, x).categories)
    assert capsys.readouterr().err.count("embedded moto server") == 1


@pytest.mark.parametrize("name", ["queue", "object"])
def test_duplicated_reordered_and_delayed_cloud_messages_change_nothing(
        aws: AwsConfig, name: str) -> None:
    """The fault wrapper drives the cloud channels below their own receive (the object
    channel then discovers by listing its inbox)."""
    network, x = small_problem()
    faults = Faults(duplicate=0.3, delay=0.3, delay_s=0.1, shuffle=True, seed=7)
    options = InferOptions(workers=3, channel=name, partition="random",
                           config=ChannelConfig(receive_timeout_s=60, aws=aws))
    result = run_inference(network, x, options,
                           transport_factory=faulty_factory(transport_class(name), faults))
    np.testing.assert_array_equal(result.categories, infer(network, x).categories)
    totals = result.metrics_document()["summary"]["totals"]
    assert totals["messages_received"] == totals["messages_sent"]
    if name == "queue":
        assert totals["duplicates_dropped"] > 0


def test_every_channel_is_a_cli_choice() -> None:
    assert set(CHANNELS) <= set(TRANSPORTS)
