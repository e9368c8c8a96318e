"""The ``queue`` channel: one SQS standard queue per worker per execution, S3 spillover.

Sending. One frame per block (the base Channel's chunking is switched off, see below);
a frame travels base64-encoded (SQS bodies are text) in SendMessageBatch calls of up to
10 entries whose bodies together fit the message limit (``max_message_bytes``: 1 MiB,
or 256 KiB, the older limit; the queue's MaximumMessageSize is set to match). A frame
whose base64 form exceeds the limit is *spilled*: its bytes go to S3 under the
execution's scratch prefix and the message carries a pointer (bucket, key, size,
SHA-256) that the receiver follows and verifies.

Why spill rather than chunk. Chunks of a block at the limit fill a whole batch each, so
an n-chunk block costs n SendMessageBatch calls, n receives and deletes, and
ceil(size / 64 KiB) billed requests; spilled, it costs one PUT, one GET and one small
message, and S3's $0.005 per PUT is what 12.5 SQS billed requests (800 KiB) cost, so past
the 1 MiB limit S3 is also the cheaper carrier. A block is then atomic, in one message or
one object, with no partial reassembly state on the receiver.

Sends run on a few threads (``SEND_THREADS``), so the worker slices and multiplies while
its messages are in flight; ``flush`` waits for them. Receiving long-polls (1-20 s,
up to 10 messages) and deletes what it read in full batches: receipts are kept until
ten are pending (a receive returns about 2.5 messages in the demo), then one
DeleteMessageBatch of ten goes out in the background, retrying partial failures;
``flush`` and ``close`` delete the rest, and receipts older than half the visibility
timeout are never held back. That is a quarter of the delete calls (the demo: about
700 instead of 2,750, 16% of all its API calls) for messages that stay invisible
meanwhile anyway. A message whose delete failed comes back later and is dropped as a
duplicate by the base class.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.aws import (
    NO_SUCH_KEY_CODES,
    QUEUE_GONE_CODES,
    Outbox,
    error_code,
    full_jitter,
    s3_client,
    sqs_client,
)
from fsd_inference.channels.base import Channel, ChannelConfig, ChannelError, Transport
from fsd_inference.channels.codec import Block, FrameHeader, decode_frame
from fsd_inference.channels.s3 import (
    SCRATCH_PREFIX,
    UNCHUNKED,
    delete_prefix,
    scratch_prefix,
)
from fsd_inference.exceptions import ConfigError
from fsd_inference.metrics import WorkerMetrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

MAX_BATCH_ENTRIES = 10
MIN_MESSAGE_BYTES = 1024  # SQS MaximumMessageSize bounds
MAX_MESSAGE_BYTES = 1024 * 1024
QUEUE_NAME_MAX = 80
LONG_POLL_MAX_S = 20
VISIBILITY_TIMEOUT_S = 60
RETENTION_S = 4 * 3600  # a crashed run's messages do not linger for days
SEND_THREADS = 4
SETUP_THREADS = 8
BATCH_ATTEMPTS = 5  # for entries a batch call reports as failed (not the sender's fault)
BATCH_BACKOFF_S = 0.05
BATCH_BACKOFF_CAP_S = 2.0
POINTER_KIND = "fsd-spill"
TAG_STACK = "fsd-stack"
TAG_EXECUTION = "fsd-execution"


def queue_name(prefix: str, execution: str, worker: int) -> str:
    """``{prefix}-{execution}-w{worker}``, within SQS's 80 characters and alphabet.

    A too-long execution id is shortened to its head plus a hash of the whole id, so
    names stay unique per execution (concurrent executions never share a queue).
    """
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", execution)
    suffix = f"-w{worker}"
    room = QUEUE_NAME_MAX - len(prefix) - 1 - len(suffix)
    if room < 12:
        raise ConfigError(f"queue prefix {prefix!r} leaves no room for execution ids")
    if len(clean) > room:
        digest = hashlib.blake2b(execution.encode(), digest_size=5).hexdigest()
        clean = f"{clean[:room - len(digest) - 1]}-{digest}"
    return f"{prefix}-{clean}{suffix}"


def spill_key(execution: str, layer: int, target: int, source: int, chunk: int,
              part: int = 0) -> str:
    # deterministic: a resent frame overwrites its own object
    return (f"{scratch_prefix(execution)}spill/t{target}/l{layer:05d}-p{part:04d}/"
            f"s{source}-c{chunk}")


def inline_limit(message_limit: int) -> int:
    """The largest frame whose base64 form fits ``message_limit`` characters."""
    return message_limit // 4 * 3


def body_length(frame_length: int) -> int:
    """Characters of a frame's message body: base64, 4 per started 3 bytes."""
    return 4 * -(-frame_length // 3)


def spills(frame_length: int, message_limit: int) -> bool:
    """Whether a frame goes to S3 (its base64 body would exceed the message limit)."""
    return body_length(frame_length) > message_limit


def pack_batches(sizes: Sequence[int], limit: int) -> list[range]:
    """The SendMessageBatch calls for message bodies of ``sizes``, in order: at most
    MAX_BATCH_ENTRIES entries whose sizes sum within ``limit`` (a lone body may fill it).
    A pure function, so fsd_inference.predict counts the calls the channel makes."""
    batches: list[range] = []
    start = size = 0
    for index, length in enumerate(sizes):
        if index > start and (index - start == MAX_BATCH_ENTRIES or size + length > limit):
            batches.append(range(start, index))
            start, size = index, 0
        size += length
    if len(sizes) > start:
        batches.append(range(start, len(sizes)))
    return batches


@dataclass(frozen=True)
class Pointer:
    """What a message carries instead of a spilled frame."""

    bucket: str
    key: str
    size: int
    sha256: str
    layer: int
    source: int

    def to_body(self) -> str:
        return json.dumps({"kind": POINTER_KIND, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> Pointer:
        data = json.loads(body)
        if data.pop("kind", None) != POINTER_KIND:
            raise ValueError("not a spill pointer")
        return cls(str(data["bucket"]), str(data["key"]), int(data["size"]),
                   str(data["sha256"]), int(data["layer"]), int(data["source"]))


class QueueChannel(Channel):
    name = "queue"

    def __init__(self, execution: str, worker: int, config: ChannelConfig,
                 queue_urls: list[str], metrics: WorkerMetrics | None = None,
                 sqs: SQSClient | None = None, s3: S3Client | None = None,
                 send_threads: int = SEND_THREADS) -> None:
        # Whole blocks: frames are never chunked here, big ones are spilled (see module doc).
        super().__init__(execution, worker, replace(config, max_message_bytes=UNCHUNKED),
                         metrics)
        self.message_limit = config.max_message_bytes
        self.bucket = config.aws.bucket
        self.queue_urls = queue_urls
        self._sqs = sqs or sqs_client(config.aws, self.metrics)
        self._given_s3 = s3  # else made on the first spill or pointer (most runs: never)
        self._made_s3: S3Client | None = None
        self._s3_lock = threading.Lock()  # sender threads may spill at the same time
        self._outbox = Outbox(send_threads, f"fsd-queue-w{worker}")
        self._fetcher: ThreadPoolExecutor | None = None
        self._layer = 0
        # read, not yet deleted (see the module doc): (receipt handle, monotonic read time)
        self._receipts: list[tuple[str, float]] = []

    # ------------------------------------------------------------------ sending

    def _put(self, target: int, frames: list[bytes]) -> None:
        parsed = [(decode_frame(frame)[0], frame) for frame in frames]
        layer = parsed[0][0].layer if parsed else self._layer
        self._outbox.submit(self._deliver, target, layer, parsed)

    def _deliver(self, target: int, layer: int, parsed: list[tuple[FrameHeader, bytes]]
                 ) -> None:
        bodies = []
        for header, frame in parsed:
            if spills(len(frame), self.message_limit):
                bodies.append(self._spill(target, header.layer, header.source, header.chunk,
                                          frame, header.part))
            else:
                bodies.append(base64.b64encode(frame).decode("ascii"))
        for batch in pack_batches([len(body) for body in bodies], self.message_limit):
            self._send_batch(target, layer, bodies[batch.start:batch.stop])

    @property
    def _s3(self) -> S3Client | None:
        """The S3 client for spilled frames, built when first needed: a client costs tens
        of milliseconds to create and a worker invocation opens a fresh channel."""
        if self._given_s3 is not None or not self.bucket:
            return self._given_s3
        with self._s3_lock:
            if self._made_s3 is None:
                self._made_s3 = s3_client(self.config.aws, self.metrics)
            return self._made_s3

    def _spill(self, target: int, layer: int, source: int, chunk: int, frame: bytes,
               part: int = 0) -> str:
        s3 = self._s3
        if s3 is None or not self.bucket:
            raise ChannelError(self.worker, layer,
                               f"a {len(frame):,}-byte frame exceeds the {self.message_limit:,}"
                               f"-byte message limit and no bucket is configured to spill it "
                               f"to (set FSD_BUCKET)")
        key = spill_key(self.execution, layer, target, source, chunk, part)
        try:
            s3.put_object(Bucket=self.bucket, Key=key, Body=frame)
        except (ClientError, BotoCoreError) as exc:
            raise ChannelError(self.worker, layer,
                               f"spilling to s3://{self.bucket}/{key} failed: {exc}") from exc
        return Pointer(self.bucket, key, len(frame), hashlib.sha256(frame).hexdigest(),
                       layer, source).to_body()

    def _send_batch(self, target: int, layer: int, bodies: list[str]) -> None:
        url = self.queue_urls[target]
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        for attempt in range(BATCH_ATTEMPTS):
            try:
                response = self._sqs.send_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise self._error(layer, f"sending to worker {target}", url, exc) from exc
            failed = response.get("Failed", [])
            if not failed:
                return
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal:
                raise ChannelError(self.worker, layer,
                                   f"SQS rejected a message to worker {target}: "
                                   f"{fatal[0].get('Code')}: {fatal[0].get('Message')}")
            retry = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in retry]
            time.sleep(full_jitter(attempt, BATCH_BACKOFF_S, BATCH_BACKOFF_CAP_S))
        raise ChannelError(self.worker, layer,
                           f"{len(entries)} message(s) to worker {target} still failing after "
                           f"{BATCH_ATTEMPTS} attempts")

    def flush(self) -> None:
        self._delete_read(everything=True)
        self._outbox.drain()

    def close(self) -> None:
        try:
            try:
                self._delete_read(everything=True)
            finally:
                self._outbox.close()
        finally:
            if self._fetcher is not None:
                self._fetcher.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ receiving

    def receive(self, layer: int, sources: Iterable[int], timeout: float | None = None,
                part: int = 0) -> dict[int, Block]:
        self._layer = layer  # for errors raised while waiting
        return super().receive(layer, sources, timeout, part)

    def _get(self, timeout: float) -> list[bytes]:
        self._outbox.check()
        url = self.queue_urls[self.worker]
        wait = min(LONG_POLL_MAX_S, max(1, math.ceil(timeout)))
        try:
            response = self._sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                 WaitTimeSeconds=wait)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(self._layer, "receiving", url, exc) from exc
        messages = response.get("Messages", [])
        if not messages:
            return []
        now = time.monotonic()
        self._receipts.extend((m["ReceiptHandle"], now) for m in messages)
        self._delete_read()
        bodies = [m.get("Body", "") for m in messages]
        pointers = [self._pointer(body) for body in bodies]
        spilled = [p for p in pointers if p is not None]
        fetched = dict(zip(spilled, self._fetch_all(spilled), strict=True))
        frames = []
        for body, pointer in zip(bodies, pointers, strict=True):
            if pointer is not None:
                frames.append(fetched[pointer])
                continue
            try:
                frames.append(base64.b64decode(body, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ChannelError(self.worker, self._layer,
                                   f"rejected a message: neither base64 nor a spill pointer "
                                   f"({len(body)} characters: {body[:40]!r})") from exc
        return frames

    def _pointer(self, body: str) -> Pointer | None:
        if not body.startswith("{"):
            return None
        try:
            return Pointer.from_body(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise ChannelError(self.worker, self._layer,
                               f"rejected a message: malformed spill pointer {body[:80]!r}"
                               ) from exc

    def _fetch_all(self, pointers: list[Pointer]) -> list[bytes]:
        if len(pointers) <= 1:
            return [self._follow(p) for p in pointers]
        if self._fetcher is None:
            self._fetcher = ThreadPoolExecutor(MAX_BATCH_ENTRIES, thread_name_prefix="fsd-spill")
        return list(self._fetcher.map(self._follow, pointers))

    def _follow(self, pointer: Pointer) -> bytes:
        """The spilled frame, verified against the pointer's size and SHA-256."""
        where = f"spilled payload s3://{pointer.bucket}/{pointer.key} from worker {pointer.source}"
        s3 = self._s3
        if s3 is None:
            raise ChannelError(self.worker, pointer.layer,
                               f"{where}: no S3 client (no bucket configured)")
        try:
            frame = s3.get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            gone = error_code(exc) in NO_SUCH_KEY_CODES
            raise ChannelError(self.worker, pointer.layer,
                               f"{where}: {'no longer exists' if gone else exc}") from exc
        if len(frame) != pointer.size:
            raise ChannelError(self.worker, pointer.layer,
                               f"{where}: {len(frame)} bytes, the pointer says {pointer.size}")
        if hashlib.sha256(frame).hexdigest() != pointer.sha256:
            raise ChannelError(self.worker, pointer.layer, f"{where}: checksum mismatch")
        return frame

    def _delete_read(self, everything: bool = False) -> None:
        """Delete the read messages in full batches of ten; all of them when asked to or
        when the oldest was read half a visibility timeout ago."""
        url = self.queue_urls[self.worker]
        held_since = time.monotonic() - VISIBILITY_TIMEOUT_S / 2
        while len(self._receipts) >= MAX_BATCH_ENTRIES or (self._receipts and (
                everything or self._receipts[0][1] < held_since)):
            batch = [handle for handle, _ in self._receipts[:MAX_BATCH_ENTRIES]]
            del self._receipts[:MAX_BATCH_ENTRIES]
            self._outbox.submit(self._delete, url, list(enumerate(batch)))

    def _delete(self, url: str, receipts: list[tuple[int, str]]) -> None:
        """Delete read messages; entries that keep failing are left to come back as
        duplicates (dropped by the base class), a vanished queue is left to _get."""
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": handle} for i, handle in receipts]
        for attempt in range(BATCH_ATTEMPTS):
            try:
                response = self._sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError):
                return
            retry = {f["Id"] for f in response.get("Failed", []) if not f.get("SenderFault")}
            if not retry:
                return
            entries = [e for e in entries if e["Id"] in retry]
            time.sleep(full_jitter(attempt, BATCH_BACKOFF_S, BATCH_BACKOFF_CAP_S))

    def _error(self, layer: int, what: str, url: str, exc: Exception) -> ChannelError:
        name = url.rsplit("/", 1)[-1]
        if error_code(exc) in QUEUE_GONE_CODES:
            return ChannelError(self.worker, layer,
                                f"{what}: queue {name} no longer exists (the execution was "
                                f"cleaned up while this worker was still running?)")
        return ChannelError(self.worker, layer, f"{what} via queue {name} failed: {exc}")


class QueueTransport(Transport):
    """Creates one queue per worker at setup, deletes them (and spilled objects) after."""

    name = "queue"

    def __init__(self, execution: str, workers: int, config: ChannelConfig,
                 sqs: SQSClient | None = None, s3: S3Client | None = None,
                 send_threads: int = SEND_THREADS) -> None:
        super().__init__(execution, workers, config)
        self.send_threads = send_threads
        self.queue_urls: list[str] = []
        self._sqs = sqs
        self._s3 = s3

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sqs"] = state["_s3"] = None  # clients stay in the process that made them
        return state

    def queue_name(self, worker: int) -> str:
        return queue_name(self.config.aws.queue_prefix, self.execution, worker)

    def _sqs_client(self) -> SQSClient:
        if self._sqs is None:
            self._sqs = sqs_client(self.config.aws)
        return self._sqs

    def tags(self) -> dict[str, str]:
        """Every queue says whose it is, so a sweeper (fsd cleanup) can tell an orphan of
        this stack's executions from anything else in the account."""
        return {TAG_STACK: self.config.aws.stack or "local", TAG_EXECUTION: self.execution}

    def setup(self) -> None:
        limit = self.config.max_message_bytes
        if not MIN_MESSAGE_BYTES <= limit <= MAX_MESSAGE_BYTES:
            raise ConfigError(f"the queue channel's message limit must be between "
                              f"{MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES} bytes, not {limit}")
        attributes: dict[QueueAttributeNameType, str] = {
            "MaximumMessageSize": str(limit),
            "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_MAX_S),
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
            "MessageRetentionPeriod": str(RETENTION_S),
            "SqsManagedSseEnabled": "true",  # encrypted at rest with SQS-owned keys
        }
        client = self._sqs_client()
        tags = self.tags()

        def create(worker: int) -> str:
            return client.create_queue(QueueName=self.queue_name(worker), Attributes=attributes,
                                       tags=tags)["QueueUrl"]

        try:
            with ThreadPoolExecutor(min(SETUP_THREADS, max(1, self.workers))) as pool:
                self.queue_urls = list(pool.map(create, range(self.workers)))
        except (ClientError, BotoCoreError) as exc:
            raise ConfigError(f"could not create the execution's queues: {exc}") from exc

    def teardown(self) -> None:
        """Delete the queues (by name after a partial setup) and the spilled objects.

        Every queue and the scratch prefix are tried even when some fail; then one
        ChannelError names every failure (the caller retries: deleting is idempotent)."""
        client = self._sqs_client()
        known = len(self.queue_urls) == self.workers

        def delete(worker: int) -> str | None:
            try:
                url = (self.queue_urls[worker] if known else
                       client.get_queue_url(QueueName=self.queue_name(worker))["QueueUrl"])
                client.delete_queue(QueueUrl=url)
            except ClientError as exc:
                if error_code(exc) not in QUEUE_GONE_CODES:
                    return f"{self.queue_name(worker)}: {exc}"
            except BotoCoreError as exc:
                return f"{self.queue_name(worker)}: {exc}"
            return None

        with ThreadPoolExecutor(min(SETUP_THREADS, max(1, self.workers))) as pool:
            failures = [f for f in pool.map(delete, range(self.workers)) if f]
        if self.config.aws.bucket:
            if self._s3 is None:
                self._s3 = s3_client(self.config.aws)
            try:
                delete_prefix(self._s3, self.config.aws.bucket, scratch_prefix(self.execution))
            except (ChannelError, ClientError, BotoCoreError) as exc:
                failures.append(f"scratch s3://{self.config.aws.bucket}/"
                                f"{scratch_prefix(self.execution)}: {exc}")
        if failures:
            raise ChannelError(-1, -1, f"teardown of execution {self.execution}: "
                                       f"{len(failures)} failure(s): " + "; ".join(failures[:5]))

    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        """The worker's endpoint; in a process that did not run setup() (a Lambda worker
        rebuilt from the execution's state), one GetQueueUrl finds the account's queue
        URL prefix and every other URL follows from the names."""
        metrics = metrics or WorkerMetrics(worker)
        client = sqs_client(self.config.aws, metrics)
        urls = self.queue_urls
        if len(urls) != self.workers:
            name = self.queue_name(worker)
            try:
                own = client.get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in QUEUE_GONE_CODES:
                    raise ChannelError(worker, 0, f"queue {name} does not exist: the "
                                       f"execution's queues were never created or are "
                                       f"already deleted") from exc
                raise
            base = own.rsplit("/", 1)[0]
            urls = [f"{base}/{self.queue_name(p)}" for p in range(self.workers)]
        return QueueChannel(self.execution, worker, self.config, urls, metrics, sqs=client,
                            send_threads=self.send_threads)


__all__ = ["SCRATCH_PREFIX", "Pointer", "QueueChannel", "QueueTransport", "body_length",
           "inline_limit", "pack_batches", "queue_name", "spill_key", "spills"]
