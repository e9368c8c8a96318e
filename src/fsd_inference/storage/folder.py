"""Folder storage: the same keys as the bucket, as files under one local folder.

``fsd infer`` runs the serverless steps on this machine over a FolderStorage, so the
plan, the workers and the gather write exactly the objects they write to S3 on AWS.
Keys are relative paths; one that would leave the folder (``..``, absolute) is refused.
Writes are atomic (temporary file, then rename), so a reader never sees half an object.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from fsd_inference.storage.base import Storage, StorageError

# What a run records as its bucket when its objects are in a folder: a valid bucket
# name (the run state is validated like any other), never one on S3.
FOLDER_BUCKET = "fsd-local-folder"


class FolderStorage(Storage):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(FOLDER_BUCKET)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would escape the folder."""
        parts = PurePosixPath(key).parts
        if not key or key.startswith("/") or ".." in parts or "\\" in key:
            raise StorageError(self.location, key, "not a key inside the folder")
        return self.root.joinpath(*parts)

    def link(self, key: str, source: Path) -> None:
        """Make ``key`` refer to an existing file or folder without copying it (the
        model and input of a local run)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        target.symlink_to(Path(source).resolve())

    def local_path(self, key: str) -> Path | None:
        """The file itself, to read in place (never to modify or delete)."""
        source = self.path(key)
        if not source.is_file():
            raise StorageError(self.location, key, "GET: no such object")
        return source

    def get_file(self, key: str, path: Path) -> Path:
        """A hard link when the folder shares the file system, else a copy."""
        source = self.local_path(key)
        assert source is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        try:
            os.link(source.resolve(), path)
        except OSError:
            shutil.copyfile(source, path)
        return path

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(self.location, key, "GET: no such object") from exc
        except OSError as exc:
            raise StorageError(self.location, key, f"GET failed: {exc}") from exc

    def _exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def _keys(self, prefix: str) -> Iterator[str]:
        # S3 prefixes are plain string prefixes: walk the deepest folder they name
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.path(base) if base else self.root
        if not start.is_dir():
            return
        for folder, _, files in os.walk(start, followlinks=True):
            for name in sorted(files):
                if name.startswith(".part-"):
                    continue
                key = (Path(folder) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def _objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        for key in self._keys(prefix):
            stamp = self.path(key).stat().st_mtime
            yield key, datetime.fromtimestamp(stamp, UTC)

    def _delete_prefix(self, prefix: str, keep: str | None) -> int:
        keys = [key for key in self._keys(prefix) if key != keep]
        for key in keys:
            self.path(key).unlink(missing_ok=True)
        if prefix.endswith("/") and keep is None:  # a whole "folder": remove what is left
            shutil.rmtree(self.path(prefix.rstrip("/")), ignore_errors=True)
        return len(keys)

    def _delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
