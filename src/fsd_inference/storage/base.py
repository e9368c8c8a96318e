"""The storage interface the steps share: keys -> bytes, in S3 or in a local folder.

The serverless steps (plan, worker, gather, cleanup) keep everything an execution needs
under keys (cloud/layout.py): shards, input slices, checkpoints, metrics, results. On AWS
those are S3 objects; ``fsd infer`` runs the very same steps on this machine over a
folder. :class:`Storage` owns the shared work (files, JSON, errors that name the key);
an implementation moves bytes with ``_put`` / ``_get`` / ``_exists`` / ``_keys`` /
``_delete_prefix``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fsd_inference.exceptions import FsdError


class StorageError(FsdError):
    """An object the run needs is missing or unreadable; names where and which key.

    The class name is a Step Functions error name (see cloud/errors.py)."""

    def __init__(self, location: str, key: str, message: str) -> None:
        self.location = location  # "s3://bucket" or a folder
        self.key = key
        super().__init__(f"{location.rstrip('/')}/{key}: {message}")


class Storage(ABC):
    """One namespace of keys (an S3 bucket, a folder). Methods raise StorageError."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket  # the name a run records (an S3 bucket, or a folder path)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the keys live, for messages: ``s3://bucket`` or a folder path."""

    def uri(self, key: str) -> str:
        return f"{self.location.rstrip('/')}/{key}"

    # ------------------------------------------------------------------ objects

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream"
                  ) -> None:
        self._put(key, data, content_type)

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)

    def put_file(self, key: str, path: Path) -> None:
        self.put_bytes(key, path.read_bytes())

    def get_file(self, key: str, path: Path) -> Path:
        """The object as a local file at ``path`` (written atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        temporary.write_bytes(self.get_bytes(key))
        temporary.replace(path)
        return path

    def local_path(self, key: str) -> Path | None:
        """The object as a file that already exists on this machine, to read in place,
        or None (then use get_file). Spares copying a multi-GB model locally."""
        return None

    def put_json(self, key: str, document: Any) -> None:
        self.put_bytes(key, json.dumps(document, indent=1, sort_keys=True).encode(),
                       "application/json")

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(self.location, key, f"not JSON: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._exists(key)

    # ------------------------------------------------------------------ prefixes

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``."""
        return self._keys(prefix)

    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """``(key, last modified)`` of every object under ``prefix``."""
        return self._objects(prefix)

    def delete_prefix(self, prefix: str, keep: str | None = None) -> int:
        """Delete everything under ``prefix`` but ``keep``; returns how many objects went.
        Raises StorageError when any key could not be deleted, naming the first ones."""
        return self._delete_prefix(prefix, keep)

    def delete(self, key: str) -> None:
        """Delete one object (no error if it is already gone)."""
        self._delete(key)

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    def _put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _keys(self, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def _objects(self, prefix: str) -> Iterator[tuple[str, datetime]]: ...

    @abstractmethod
    def _delete_prefix(self, prefix: str, keep: str | None) -> int: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...
