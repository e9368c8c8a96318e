"""Ownership computed once per (model, partitioner, workers, seed) and reused.

A hypergraph partition of a 1024 x 120 network takes seconds, a larger one minutes;
the result depends only on the weights' structure, the partitioner, P and the seed, so
it is stored under the cache directory (``$FSD_CACHE_DIR``, default
``./.cache/fsd-inference``) as ``partitions/<fingerprint>-<partitioner>-p<P>-s<seed>-
v<REVISION>.npy``, an ``(L + 1, N)`` int32 array, written atomically. A file that is
unreadable or does not fit the network is recomputed and replaced, never trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsd_inference.config import cache_dir as default_cache_dir
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.tsv import atomic_path
from fsd_inference.partition import get_partitioner

# Part of every key: bump it when a partitioner's output for the same inputs changes,
# so partitions cached by an older version are not reused.
REVISION = 2  # 2: layers above hypergraph.STREAM_ABOVE vertices are streamed
SUBDIR = "partitions"


@dataclass(frozen=True)
class Ownership:
    """Owners of every neuron of Y_0 .. Y_L, and where they came from."""

    owners: np.ndarray  # (L + 1, N) int32
    cached: bool  # read from the cache (no partitioning ran)
    seconds: float  # partitioning time, or the time to read the cached file
    path: Path


def cache_path(network: NetworkSource, partitioner: str, workers: int, seed: int,
               cache_dir: Path | str | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{network.fingerprint()}-{partitioner}-p{workers}-s{seed}-v{REVISION}.npy"
    return root / SUBDIR / name


def ownership(network: NetworkSource, partitioner: str, workers: int, seed: int = 0,
              cache_dir: Path | str | None = None) -> Ownership:
    """The cached ownership if there is a valid one, else partition now and store it."""
    path = cache_path(network, partitioner, workers, seed, cache_dir)
    started = time.perf_counter()
    owners = _read(path, network, workers)
    if owners is not None:
        return Ownership(owners, True, time.perf_counter() - started, path)
    owners = get_partitioner(partitioner).partition(network, workers, seed).astype(np.int32)
    seconds = time.perf_counter() - started
    with atomic_path(path) as temporary, temporary.open("wb") as out:
        np.save(out, owners, allow_pickle=False)
    return Ownership(owners, False, seconds, path)


def owners_for(network: NetworkSource, partitioner: str, workers: int, seed: int = 0,
               cache_dir: Path | str | None = None) -> np.ndarray:
    """Owners ``(L + 1, N)`` for ``build_plan``: from the cache, or partitioned once."""
    return ownership(network, partitioner, workers, seed, cache_dir).owners


def _read(path: Path, network: NetworkSource, workers: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        owners = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    expected = (network.depth + 1, network.neurons)
    if (not isinstance(owners, np.ndarray) or owners.shape != expected
            or owners.dtype.kind not in "iu" or owners.size == 0
            or owners.min() < 0 or owners.max() >= workers):
        return None
    return owners.astype(np.int32, copy=False)
