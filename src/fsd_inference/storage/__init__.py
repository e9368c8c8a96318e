"""Where the steps keep an execution's objects: S3 on AWS, a folder on this machine."""

from __future__ import annotations

from fsd_inference.storage.base import Storage, StorageError
from fsd_inference.storage.folder import FolderStorage
from fsd_inference.storage.s3 import S3Storage, storage_for

__all__ = ["FolderStorage", "S3Storage", "Storage", "StorageError", "storage_for"]
