"""The ``object`` channel: S3 alone, one object per block, discovery by GET or LIST.

Key layout, all under the execution's scratch prefix (so one paginated delete at
teardown removes everything an execution wrote, spilled queue payloads included)::

    scratch/{execution}/t{target}/l{layer:05d}/s{source}-p{part}-c{chunk}

Target first: a worker's whole inbox is one prefix, and zero-padded layers list in
order, so a receiver that was not told what to expect can still LIST its inbox.

One object per block: the base Channel's chunking is switched off (S3 has no size limit
worth chunking for, and every PUT is billed), so ``chunk`` is 0 unless a caller hands
``_put`` pre-chunked frames, which discovery also handles.

Discovery. The receiver knows from the plan which sources it waits for in a layer, so
it can GET their keys directly (a 404 means "not yet"), or LIST the layer's prefix and
GET only the new keys. A LIST costs what 12.5 GETs cost ($0.005 vs $0.0004 per 1,000),
so ``auto`` probes by GET while at most ``LIST_BREAK_EVEN`` keys are missing and LISTs
when more are; empty polls back off from 20 ms to 0.5 s (jittered) and reset when
something arrives. Early blocks for later layers simply wait in S3 until their layer
is polled; duplicate PUTs overwrite the same key, so a block is read once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.aws import (
    NO_SUCH_BUCKET_CODES,
    NO_SUCH_KEY_CODES,
    Outbox,
    error_code,
    s3_client,
)
from fsd_inference.channels.base import Channel, ChannelConfig, ChannelError, Transport
from fsd_inference.channels.codec import Block, FrameError, decode_frame
from fsd_inference.config import AwsConfig
from fsd_inference.exceptions import ConfigError
from fsd_inference.metrics import WorkerMetrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

SCRATCH_PREFIX = "scratch"
UNCHUNKED = 2**32 - 1  # a frame limit no block reaches: one frame (object) per block
LIST_BREAK_EVEN = 12  # missing keys above which one LIST is cheaper than probing by GET
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5
SEND_THREADS = 4
FETCH_THREADS = 8
DELETE_BATCH = 1000  # DeleteObjects limit

Discovery = Literal["auto", "get", "list"]


def scratch_prefix(execution: str) -> str:
    return f"{SCRATCH_PREFIX}/{execution}/"


def inbox_prefix(execution: str, target: int) -> str:
    return f"{scratch_prefix(execution)}t{target}/"


def layer_prefix(execution: str, layer: int, target: int) -> str:
    return f"{inbox_prefix(execution, target)}l{layer:05d}/"


def key_layer(key: str) -> int:
    return int(key.rsplit("/", 2)[-2][1:])


def object_key(execution: str, layer: int, target: int, source: int, chunk: int,
               part: int = 0) -> str:
    return f"{layer_prefix(execution, layer, target)}s{source}-p{part}-c{chunk}"


def require_bucket(aws: AwsConfig, purpose: str) -> str:
    if not aws.bucket:
        raise ConfigError(f"{purpose} needs an S3 bucket: set FSD_BUCKET (fsd infer starts a "
                          f"local emulator with one when no AWS endpoint or credentials are "
                          f"configured)")
    return aws.bucket


def delete_prefix(s3: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` (paginated); returns how many were deleted."""
    deleted = 0
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": DELETE_BATCH}
        if token:
            kwargs["ContinuationToken"] = token
        try:
            page = s3.list_objects_v2(**kwargs)
        except ClientError as exc:
            if error_code(exc) in NO_SUCH_BUCKET_CODES:
                return deleted
            raise
        keys: list[ObjectIdentifierTypeDef] = [
            {"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
        if not page.get("IsTruncated"):
            return deleted
        token = page.get("NextContinuationToken")


def fetch_object(s3: S3Client, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if there is no such key (yet)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in NO_SUCH_KEY_CODES:
            return None
        raise


class ObjectChannel(Channel):
    name = "object"

    def __init__(self, execution: str, worker: int, config: ChannelConfig,
                 metrics: WorkerMetrics | None = None, s3: S3Client | None = None,
                 discovery: Discovery = "auto", send_threads: int = SEND_THREADS) -> None:
        super().__init__(execution, worker, replace(config, max_message_bytes=UNCHUNKED),
                         metrics)
        self.bucket = require_bucket(config.aws, "the object channel")
        self.discovery = discovery
        self._s3 = s3 or s3_client(config.aws, self.metrics)
        self._outbox = Outbox(send_threads, f"fsd-object-w{worker}")
        self._fetcher = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fsd-fetch")
        self._layer = 0
        self._part = 0
        self._sources: frozenset[int] = frozenset()
        self._fetched: dict[int, set[str]] = {}  # layer -> keys already read
        # (layer, part, source) -> chunk count
        self._chunk_counts: dict[tuple[int, int, int], int] = {}
        self._empty_polls = 0

    # ------------------------------------------------------------------ sending

    def _put(self, target: int, frames: list[bytes]) -> None:
        for frame in frames:
            header, _ = decode_frame(frame)
            key = object_key(self.execution, header.layer, target, header.source, header.chunk,
                             header.part)
            self._outbox.submit(self._put_object, header.layer, key, frame)

    def _put_object(self, layer: int, key: str, frame: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=frame)
        except (ClientError, BotoCoreError) as exc:
            raise ChannelError(self.worker, layer,
                               f"PUT s3://{self.bucket}/{key} failed: {exc}") from exc

    def flush(self) -> None:
        self._outbox.drain()

    def close(self) -> None:
        try:
            self._outbox.close()
        finally:
            self._fetcher.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ receiving

    def receive(self, layer: int, sources: Iterable[int], timeout: float | None = None,
                part: int = 0) -> dict[int, Block]:
        wanted = frozenset(sources)
        self.expect(layer, wanted, part)
        return super().receive(layer, wanted, timeout, part)

    def expect(self, layer: int, sources: Iterable[int], part: int = 0) -> None:
        """Name the layer, part and sources ``_get`` looks for (``receive`` does this)."""
        if layer != self._layer:
            self._empty_polls = 0
            for old in [k for k in self._fetched if k < layer]:
                del self._fetched[old]
        self._layer, self._part, self._sources = layer, part, frozenset(sources)

    def _get(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            self._outbox.check()
            frames = self._poll()
            if frames:
                self._empty_polls = 0
                return frames
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            delay = min(POLL_MAX_S, POLL_FIRST_S * 2.0 ** self._empty_polls)
            time.sleep(min(remaining, delay * (0.5 + random.random() / 2)))
            self._empty_polls = min(self._empty_polls + 1, 16)

    def _wanted_keys(self) -> list[str]:
        """Keys of the awaited layer still to read: chunk 0 of every source not yet seen,
        the remaining chunks of a source whose chunk count a first frame told us."""
        fetched = self._fetched.setdefault(self._layer, set())
        keys = []
        for source in sorted(self._sources):
            count = self._chunk_counts.get((self._layer, self._part, source), 1)
            for chunk in range(count):
                key = object_key(self.execution, self._layer, self.worker, source, chunk,
                                 self._part)
                if key not in fetched:
                    keys.append(key)
        return keys

    def _poll(self) -> list[bytes]:
        if not self._sources:
            # Driven by something that did not call expect() (a wrapper's receive):
            # list the whole inbox and read whatever is new.
            present = self._list(inbox_prefix(self.execution, self.worker))
            wanted = sorted(k for k in present
                            if k not in self._fetched.get(key_layer(k), set()))
        else:
            wanted = self._wanted_keys()
            use_list = self.discovery == "list" or (
                self.discovery == "auto" and len(wanted) > LIST_BREAK_EVEN)
            if wanted and use_list:
                present = self._list(layer_prefix(self.execution, self._layer, self.worker))
                wanted = [key for key in wanted if key in present]
        frames = []
        for key, frame in zip(wanted, self._fetcher.map(self._fetch, wanted), strict=True):
            if frame is None:
                continue
            self._fetched.setdefault(key_layer(key), set()).add(key)
            frames.append(frame)
            self._note_chunks(frame)
        return frames

    def _note_chunks(self, frame: bytes) -> None:
        try:
            header, _ = decode_frame(frame)
        except FrameError:
            return  # the base class rejects it, naming worker and layer
        if header.chunks > 1:
            self._chunk_counts[(header.layer, header.part, header.source)] = header.chunks

    def _list(self, prefix: str) -> set[str]:
        keys: set[str] = set()
        token: str | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
                if token:
                    kwargs["ContinuationToken"] = token
                page = self._s3.list_objects_v2(**kwargs)
                keys.update(item["Key"] for item in page.get("Contents", []))
                if not page.get("IsTruncated"):
                    return keys
                token = page.get("NextContinuationToken")
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"LIST s3://{self.bucket}/{prefix}", exc) from exc

    def _fetch(self, key: str) -> bytes | None:
        try:
            return fetch_object(self._s3, self.bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"GET s3://{self.bucket}/{key}", exc) from exc

    def _error(self, what: str, exc: Exception) -> ChannelError:
        if error_code(exc) in NO_SUCH_BUCKET_CODES:
            return ChannelError(self.worker, self._layer,
                                f"{what}: bucket {self.bucket} no longer exists")
        return ChannelError(self.worker, self._layer, f"{what} failed: {exc}")


class ObjectTransport(Transport):
    """Nothing to create per execution; teardown deletes the execution's scratch prefix."""

    name = "object"

    def __init__(self, execution: str, workers: int, config: ChannelConfig,
                 s3: S3Client | None = None, discovery: Discovery = "auto",
                 send_threads: int = SEND_THREADS) -> None:
        super().__init__(execution, workers, config)
        self.discovery: Discovery = discovery
        self.send_threads = send_threads
        self._s3 = s3

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_s3"] = None  # clients stay in the process that made them
        return state

    def _client(self) -> S3Client:
        if self._s3 is None:
            self._s3 = s3_client(self.config.aws)
        return self._s3

    def setup(self) -> None:
        bucket = require_bucket(self.config.aws, "the object channel")
        try:
            self._client().head_bucket(Bucket=bucket)
        except ClientError as exc:
            raise ConfigError(f"bucket {bucket} is not usable: {exc}") from exc

    def teardown(self) -> None:
        if self.config.aws.bucket:
            delete_prefix(self._client(), self.config.aws.bucket,
                          scratch_prefix(self.execution))

    def channel(self, worker: int, metrics: WorkerMetrics | None = None) -> Channel:
        return ObjectChannel(self.execution, worker, self.config, metrics,
                             discovery=self.discovery, send_threads=self.send_threads)

