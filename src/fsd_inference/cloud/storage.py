"""S3 object I/O for the steps: files, JSON, listing, deleting, with errors that name keys.

The client comes from :func:`fsd_inference.aws.s3_client` (endpoint from AwsConfig,
bounded timeouts and retries); pass ``metrics`` and every call is counted into it, so
a worker's shard and checkpoint traffic shows up in its metrics beside the channel's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.aws import NO_SUCH_KEY_CODES, error_code, s3_client
from fsd_inference.channels.s3 import DeleteFailed, delete_prefix
from fsd_inference.cloud.errors import StorageError
from fsd_inference.config import AwsConfig
from fsd_inference.metrics import WorkerMetrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_s3_client(aws: AwsConfig, metrics: WorkerMetrics | None = None) -> S3Client:
    """The one place the steps build an S3 client (so it is easy to swap or inject)."""
    return s3_client(aws, metrics)


class Storage:
    """One bucket. Methods raise StorageError (never a bare botocore error)."""

    def __init__(self, bucket: str, client: S3Client) -> None:
        self.bucket = bucket
        self.client = client

    def _fail(self, key: str, action: str, exc: Exception) -> StorageError:
        if error_code(exc) in NO_SUCH_KEY_CODES:
            return StorageError(self.bucket, key, f"{action}: no such object")
        return StorageError(self.bucket, key, f"{action} failed: {exc}")

    # ------------------------------------------------------------------ objects

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream"
                  ) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "PUT", exc) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "GET", exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        self.put_bytes(key, path.read_bytes())

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        temporary.write_bytes(self.get_bytes(key))
        temporary.replace(path)
        return path

    def put_json(self, key: str, document: Any) -> None:
        self.put_bytes(key, json.dumps(document, indent=1, sort_keys=True).encode(),
                       "application/json")

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(self.bucket, key, f"not JSON: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in NO_SUCH_KEY_CODES:
                return False
            raise self._fail(key, "HEAD", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, "HEAD", exc) from exc
        return True

    # ------------------------------------------------------------------ prefixes

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (paginated LIST)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "LIST", exc) from exc

    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """``(key, last modified)`` of every object under ``prefix`` (paginated LIST)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "LIST", exc) from exc

    def delete_prefix(self, prefix: str, keep: str | None = None) -> int:
        """Delete everything under ``prefix`` but ``keep``; returns how many objects went.
        Raises StorageError when any key could not be deleted (DeleteObjects reports
        failures per key), naming the first ones."""
        try:
            return delete_prefix(self.client, self.bucket, prefix, keep=keep)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "DELETE", exc) from exc
        except DeleteFailed as exc:
            raise StorageError(self.bucket, prefix, str(exc)) from exc

    def delete(self, key: str) -> None:
        """Delete one object (no error if it is already gone)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "DELETE", exc) from exc


def storage_for(bucket: str, aws: AwsConfig | None = None,
                metrics: WorkerMetrics | None = None) -> Storage:
    return Storage(bucket, make_s3_client(aws or AwsConfig(), metrics))
