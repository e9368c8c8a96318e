"""Shards cut once per (model, ownership, slots) and reused, like partitions.

Cutting the shards (partition.plan.write_shards: every layer sliced per slot, twins
found, index maps computed, each shard written as a bundle) took 4.6 s of a 4096 x 120
run's 7 s Plan step on two workers; the result depends only on the network's weights
and bias (its fingerprint), the owners of every neuron and the number of slots. So when
the Plan has a cache directory (local runs: ``fsd infer``; a Lambda's /tmp does not
outlive its container), the shards are kept under ``shards/<fingerprint>-<owners
digest>-w<slots>-<dtype>-v<REVISION>/`` with the plan's traffic and work (``plan.npz``, which
also records each shard's SHA-256). A later run with the same key links the files and
reads the plan instead of cutting again. An entry that is incomplete, unreadable, does
not fit, or whose shard bytes do not match their recorded digest is cut again and
replaced, never trusted; entries appear whole (written in a temporary folder, renamed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fsd_inference.model.base import NetworkSource
from fsd_inference.partition.plan import CommPlan, write_shards

# Part of every key: bump it when the shard layout or the plan's arrays change.
REVISION = 1
SUBDIR = "shards"
PLAN_FILE = "plan.npz"
DIGEST_BYTES = 8  # of the owners' SHA-256, in the key (16 hex digits, as fingerprints)


def shard_name(slot: int) -> str:
    return f"shard-{slot}.fsdm"


def entry_path(network: NetworkSource, owners: np.ndarray, slots: int, dtype: str,
               root: Path) -> Path:
    """The entry's folder; the dtype is part of the key because the shards hold the
    weights as the network was read (a float32 read of arbitrary weights loses bits)."""
    owners = np.ascontiguousarray(owners, dtype=np.int32)
    digest = hashlib.sha256(np.asarray(owners.shape, dtype=np.int64).tobytes())
    digest.update(owners.tobytes())
    owned = digest.hexdigest()[:2 * DIGEST_BYTES]
    key = f"{network.fingerprint()}-{owned}-w{slots}-{np.dtype(dtype).name}-v{REVISION}"
    return root / SUBDIR / key


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _place(source: Path, target: Path) -> None:
    """``target`` becomes the cached file: a hard link where the file system allows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _read(entry: Path, owners: np.ndarray, slots: int) -> CommPlan | None:
    """The entry's plan if the entry is whole and its shards are the recorded bytes."""
    try:
        with np.load(entry / PLAN_FILE, allow_pickle=False) as stored:
            volume, copies, work = stored["volume"], stored["copies"], stored["work"]
            digests = [str(d) for d in stored["digests"]]
        if (len(digests) != slots or volume.shape != (owners.shape[0] - 1, slots, slots)
                or copies.shape != volume.shape or work.shape != volume.shape[:2]
                or any(_file_digest(entry / shard_name(p)) != digests[p]
                       for p in range(slots))):
            return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    return CommPlan(workers=slots, owners=owners, volume=volume, copies=copies, work=work)


def _cut(network: NetworkSource, owners: np.ndarray, slots: int, entry: Path) -> CommPlan:
    """Cut the shards into a new entry, replacing a damaged one. Another run may have
    made the entry meanwhile: a valid one is kept (a run may be linking from it), and
    a damaged one is moved aside before it is deleted, so the new entry appears whole."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        plan = write_shards(network, owners, slots, lambda p: staging / shard_name(p))
        digests = np.asarray([_file_digest(staging / shard_name(p)) for p in range(slots)])
        np.savez(staging / PLAN_FILE, volume=plan.volume, copies=plan.copies,
                 work=plan.work, digests=digests)
        if _read(entry, owners, slots) is None:
            if entry.exists():
                aside = staging.with_name(staging.name + ".old")
                os.replace(entry, aside)
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return plan


def cached_shards(network: NetworkSource, owners: np.ndarray, slots: int, dtype: str,
                  path_of: Callable[[int], Path], root: Path | None) -> tuple[CommPlan, bool]:
    """:func:`write_shards` through the cache under ``root`` (None: no cache, cut into
    ``path_of`` directly). Returns the plan and whether it came from the cache."""
    if root is None:
        return write_shards(network, owners, slots, path_of), False
    entry = entry_path(network, owners, slots, dtype, root)
    plan = _read(entry, owners, slots)
    cached = plan is not None
    if plan is None:
        plan = _cut(network, owners, slots, entry)
    for slot in range(slots):
        _place(entry / shard_name(slot), path_of(slot))
    return plan, cached
