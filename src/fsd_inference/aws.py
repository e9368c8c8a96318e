"""AWS clients: endpoint injection, bounded timeouts and retries, request accounting.

Every client the library builds comes from :func:`sqs_client` / :func:`s3_client`, so
one place decides

- where the APIs are (``AwsConfig.endpoint_url``: real AWS, or the embedded moto of
  :mod:`fsd_inference.local`),
- how long anything may wait (connect and read timeouts; the read timeout stays above
  SQS's 20 s long poll),
- how failures are retried: botocore's ``standard`` mode retries throttling errors
  (base 1 s) and 5xx / connection errors (base 50 ms) with truncated exponential
  backoff and full jitter, ``rand(0, 1) * min(base * 2**i, 20 s)``, for at most
  ``MAX_ATTEMPTS`` attempts,
- what every call costs: botocore event hooks count each HTTP attempt per API
  ("SQS.SendMessageBatch", "S3.PutObject", ...) and the bytes it moved into
  :class:`~fsd_inference.metrics.WorkerMetrics`, and SQS's billed requests (each
  started 64 KiB of a call's message payload is one billed request). Hooks rather than
  wrappers: no call site can forget to count.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from fsd_inference.config import AwsConfig
from fsd_inference.metrics import WorkerMetrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0  # > the longest SQS long poll (20 s)
MAX_ATTEMPTS = 5  # throttling: waits of at most 1, 2, 4, 8 s (jittered) before giving up
MAX_POOL_CONNECTIONS = 16  # >= the channels' sender threads
SQS_BILLING_CHUNK = 64 * 1024  # "each 64 KB chunk of a payload is billed as 1 request"

SENT = "sent"
_COUNTERS_LOCK = threading.Lock()
RECEIVED = "received"


def botocore_config(service: str, aws: AwsConfig) -> Config:
    """Timeouts, connection pool and retry policy for one client."""
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        "max_pool_connections": MAX_POOL_CONNECTIONS,
        "retries": {"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        "tcp_keepalive": True,
        # Frames carry their own CRC32 and spilled payloads a SHA-256: skip S3's
        # optional checksums (and the aws-chunked uploads they bring).
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if service == "s3" and aws.endpoint_url:
        options["s3"] = {"addressing_style": "path"}  # emulators on an IP address
    return Config(**options)


_SESSIONS: dict[tuple[str | None, ...], boto3.session.Session] = {}
_SESSION_LOCK = threading.Lock()
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
                   "AWS_CONFIG_FILE")


def _new_client(service: str, aws: AwsConfig, metrics: WorkerMetrics | None) -> Any:
    """A client from a Session shared per credential environment (a Session caches the
    service models: a fresh one per client costs ~0.25 s). Creation is serialised:
    Sessions are not thread-safe, clients are."""
    key = tuple(os.environ.get(name) for name in _CREDENTIAL_ENV)
    with _SESSION_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = boto3.session.Session()
        client = session.client(service, region_name=aws.region,  # type: ignore[call-overload]
                                endpoint_url=aws.endpoint_url,
                                config=botocore_config(service, aws))
    if metrics is not None:
        instrument(client, metrics)
    return client


def sqs_client(aws: AwsConfig, metrics: WorkerMetrics | None = None) -> SQSClient:
    client: SQSClient = _new_client("sqs", aws, metrics)
    return client


def s3_client(aws: AwsConfig, metrics: WorkerMetrics | None = None) -> S3Client:
    client: S3Client = _new_client("s3", aws, metrics)
    return client


def billed_sqs_requests(payload_bytes: int) -> int:
    """SQS bills each started 64 KiB of a call's payload as one request (at least one)."""
    return max(1, -(-payload_bytes // SQS_BILLING_CHUNK))


def sqs_payload_bytes(operation: str, params: dict[str, Any] | None,
                      parsed: dict[str, Any] | None) -> int:
    """The message payload of one SQS call: bodies (and attributes) sent or received."""
    messages: list[dict[str, Any]] = []
    if operation == "SendMessage" and params:
        messages = [params]
    elif operation == "SendMessageBatch" and params:
        messages = list(params.get("Entries", []))
    elif operation == "ReceiveMessage" and parsed:
        messages = list(parsed.get("Messages", []))
    total = 0
    for message in messages:
        body = message.get("MessageBody", message.get("Body", ""))
        total += len(body.encode())
        for name, value in message.get("MessageAttributes", {}).items():
            total += len(name.encode()) + len(value.get("DataType", "").encode())
            total += len(value.get("StringValue", "").encode())
            total += len(value.get("BinaryValue", b""))
    return total


class _Accounting:
    """Botocore event handlers that count one client's calls into one WorkerMetrics."""

    def __init__(self, metrics: WorkerMetrics, service_id: str) -> None:
        self.metrics = metrics
        self.service = service_id  # "SQS", "S3"
        self.lock = _COUNTERS_LOCK  # sender threads and both clients share the counters

    def _api(self, event_name: str) -> str:
        return f"{self.service}.{event_name.rsplit('.', 1)[-1]}"

    def before_send(self, request: Any, event_name: str, **_: Any) -> None:
        """One HTTP attempt (retries included: each attempt is a request AWS sees)."""
        api = self._api(event_name)
        size = _body_size(request.body, request.headers)
        with self.lock:
            self.metrics.api_calls[api] += 1
            self.metrics.api_bytes[f"{api} {SENT}"] += size

    def response_received(self, response_dict: dict[str, Any] | None, event_name: str,
                          **_: Any) -> None:
        if response_dict is None:  # connection error: nothing came back
            return
        length = response_dict.get("headers", {}).get("content-length")
        body = response_dict.get("body")
        if length is not None:
            size = int(length)
        elif isinstance(body, bytes | bytearray):
            size = len(body)
        else:
            size = 0
        with self.lock:
            self.metrics.api_bytes[f"{self._api(event_name)} {RECEIVED}"] += size

    def before_parameter_build(self, params: dict[str, Any], event_name: str,
                               context: dict[str, Any], **_: Any) -> None:
        context["fsd_params"] = params

    def after_call(self, parsed: dict[str, Any], event_name: str, context: dict[str, Any],
                   **_: Any) -> None:
        """One billed call per API call (not per attempt), sized by its payload."""
        operation = event_name.rsplit(".", 1)[-1]
        payload = sqs_payload_bytes(operation, context.get("fsd_params"), parsed)
        with self.lock:
            self.metrics.billed_requests[self._api(event_name)] += billed_sqs_requests(payload)


def _body_size(body: Any, headers: Any) -> int:
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    length = headers.get("Content-Length") if headers is not None else None
    return int(length) if length is not None else 0


def instrument(client: Any, metrics: WorkerMetrics) -> None:
    """Count every call ``client`` makes into ``metrics`` (see the module docstring)."""
    service_id = str(client.meta.service_model.service_id)
    hook = service_id.lower().replace(" ", "-")
    accounting = _Accounting(metrics, service_id.upper())
    events = client.meta.events
    events.register(f"before-send.{hook}", accounting.before_send)
    events.register(f"response-received.{hook}", accounting.response_received)
    if hook == "sqs":
        events.register(f"before-parameter-build.{hook}", accounting.before_parameter_build)
        events.register(f"after-call.{hook}", accounting.after_call)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
NO_SUCH_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
NO_SUCH_BUCKET_CODES = frozenset({"NoSuchBucket"})


def full_jitter(attempt: int, base_s: float, cap_s: float) -> float:
    """``rand(0, 1) * min(cap, base * 2**attempt)``: the wait before retry ``attempt``."""
    return random.random() * min(cap_s, base_s * 2.0 ** attempt)


class Outbox:
    """A few threads that carry a channel's AWS calls while the worker computes.

    ``submit`` returns at once (or runs the call inline when ``threads`` is 0); a call
    that failed raises its error at the next ``submit``, ``check`` or ``drain``, so no
    failure is lost and none is raised on the wrong thread. Thread-safe (a wrapper may
    deliver from timer threads).
    """

    def __init__(self, threads: int, name: str) -> None:
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix=name)
                      if threads > 0 else None)
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def submit(self, call: Callable[..., None], *args: Any) -> None:
        self.check()
        if self._pool is None:
            call(*args)
            return
        future = self._pool.submit(call, *args)
        with self._lock:
            self._pending.append(future)

    def check(self) -> None:
        """Raise the error of the first finished call that failed, if any."""
        with self._lock:
            done = [f for f in self._pending if f.done()]
            if done:
                self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def drain(self) -> None:
        """Wait for every call submitted so far; raise the first failure."""
        with self._lock:
            pending, self._pending = self._pending, []
        wait(pending)
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
