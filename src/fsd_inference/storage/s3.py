"""S3 storage: the bucket of a deployed stack (or of the embedded emulator).

The client comes from :func:`fsd_inference.aws.s3_client` (endpoint from AwsConfig,
bounded timeouts and retries); pass ``metrics`` and every call is counted into it, so
a worker's shard and checkpoint traffic shows up in its metrics beside the channel's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.aws import NO_SUCH_KEY_CODES, error_code, s3_client
from fsd_inference.channels.s3 import DeleteFailed, delete_prefix
from fsd_inference.config import AwsConfig
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.storage.base import Storage, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_s3_client(aws: AwsConfig, metrics: WorkerMetrics | None = None) -> S3Client:
    """The one place the steps build an S3 client (so it is easy to swap or inject)."""
    return s3_client(aws, metrics)


class S3Storage(Storage):
    """One bucket."""

    def __init__(self, bucket: str, client: S3Client) -> None:
        super().__init__(bucket)
        self.client = client

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}"

    def _fail(self, key: str, action: str, exc: Exception) -> StorageError:
        if error_code(exc) in NO_SUCH_KEY_CODES:
            return StorageError(self.location, key, f"{action}: no such object")
        return StorageError(self.location, key, f"{action} failed: {exc}")

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "PUT", exc) from exc

    def _get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "GET", exc) from exc

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in NO_SUCH_KEY_CODES:
                return False
            raise self._fail(key, "HEAD", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, "HEAD", exc) from exc
        return True

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "LIST", exc) from exc

    def _objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "LIST", exc) from exc

    def _delete_prefix(self, prefix: str, keep: str | None) -> int:
        # DeleteObjects reports failures per key: DeleteFailed names the first ones
        try:
            return delete_prefix(self.client, self.bucket, prefix, keep=keep)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, "DELETE", exc) from exc
        except DeleteFailed as exc:
            raise StorageError(self.location, prefix, str(exc)) from exc

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "DELETE", exc) from exc


def storage_for(bucket: str, aws: AwsConfig | None = None,
                metrics: WorkerMetrics | None = None) -> S3Storage:
    return S3Storage(bucket, make_s3_client(aws or AwsConfig(), metrics))
