"""model.validate.read_npz_member, the bundle readers' one-pass member read, against
numpy's own reader of the same files (np.load), member by member."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fsd_inference.exceptions import InputFormatError
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.validate import read_npz_member
from fsd_inference.partition.plan import write_shards
from fsd_inference.partition.simple import RandomPartitioner


def assert_same_as_numpy(path: Path) -> int:
    with zipfile.ZipFile(path) as archive, np.load(path, allow_pickle=False) as expected:
        for info in archive.infolist():
            got = read_npz_member(path, archive, info)
            want = expected[info.filename[:-4]]
            assert got.dtype == want.dtype and got.shape == want.shape, info.filename
            assert got.tobytes(order="A") == want.tobytes(order="A"), info.filename
            assert got.flags.f_contiguous == want.flags.f_contiguous
            assert got.flags.writeable, info.filename
        return len(archive.infolist())


def test_every_member_of_a_shard_reads_as_numpy_reads_it(tmp_path: Path) -> None:
    network = generate(GeneratorParams(1024, 3, 7))
    owners = RandomPartitioner().partition(network, 3, seed=1)
    write_shards(network, owners, 3, lambda slot: tmp_path / f"shard-{slot}.fsdm")
    assert assert_same_as_numpy(tmp_path / "shard-1.fsdm") > 20


def test_odd_arrays_read_as_numpy_reads_them(tmp_path: Path) -> None:
    """0-d, empty, Fortran order, big-endian, and a version 2.0 header."""
    path = tmp_path / "odd.npz"
    arrays = {"scalar": np.float64(2.5), "empty": np.zeros((0, 3), np.int32),
              "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
              "big": np.arange(5, dtype=">i4"), "bools": np.array([True, False])}
    np.savez_compressed(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:  # a member with a version 2.0 header
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.arange(7, dtype=np.int16), version=(2, 0))
        archive.writestr("v2.npy", buffer.getvalue())
    assert assert_same_as_numpy(path) == 6


def test_a_header_that_lies_about_the_size_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.arange(10, dtype=np.int64))
    path = tmp_path / "lies.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("short.npy", buffer.getvalue()[:-8])  # one value missing
    with zipfile.ZipFile(path) as archive, \
            pytest.raises(InputFormatError, match="its header describes 80 bytes"):
        read_npz_member(path, archive, archive.getinfo("short.npy"))
