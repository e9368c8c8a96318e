"""Findings 3 to 6, case by case: tiny inputs that declare huge sizes are refused before
anything is allocated, damaged or forged bundles and frames are the project's errors
naming the file (or frame) and what is wrong, never a raw exception or a model that
silently computes garbage."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import zstandard

from fsd_inference.channels import codec
from fsd_inference.channels.codec import Block, FrameError, decode_body, decode_frame
from fsd_inference.cloud.activations import read_activations, write_activations
from fsd_inference.exceptions import InputFormatError
from fsd_inference.model.binary import load_network, pack_csr, save_network, write_bundle
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import read_categories, read_input
from fsd_inference.partition.plan import load_shard

SMALL = 8 << 20  # what reading a few-byte input may allocate at most


@pytest.fixture
def peak() -> Iterator[Callable[[], int]]:
    tracemalloc.start()
    yield lambda: tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()


# ----------------------------------------------------------------------------- finding 3


def test_a_tiny_zstd_frame_declaring_64_gib_is_refused(peak: Callable[[], int]) -> None:
    forged = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 64)
    header = bytearray(forged)
    # rewrite the frame header's content size field as 64 GiB (8-byte field)
    params = zstandard.get_frame_parameters(bytes(header))
    assert params.content_size == 64
    declared = 64 << 30
    frame = (zstandard.FRAME_HEADER + bytes([0xE0])  # single segment, 8-byte content size
             + struct.pack("<Q", declared) + bytes(header[-(len(header) - 6):]))
    assert zstandard.frame_content_size(frame) == declared
    with pytest.raises(FrameError, match="declares 68,719,476,736 bytes"):
        decode_body(frame)
    assert peak() < SMALL


def test_an_npz_member_whose_header_declares_1_tib_is_refused(tmp_path: Path,
                                                              peak: Callable[[], int]) -> None:
    path = tmp_path / "forged.fsdm"
    save_network(Network(4, (sp.csr_matrix(np.eye(4)),), -0.3), path)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False,
                                               "shape": (2**37,)})
    npy.write(b"\0" * 64)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("layer1.data.npy", npy.getvalue())
    with pytest.raises(InputFormatError, match="describes 1,099,511,627,776 bytes"):
        load_network(path)
    assert peak() < SMALL


def test_an_npz_member_declaring_more_than_deflate_allows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "forged.fsdm"
    save_network(Network(4, (sp.csr_matrix(np.eye(4)),), -0.3), path)
    data = bytearray(path.read_bytes())
    directory = data.rfind(b"PK\x01\x02")  # the last member's central directory entry
    data[directory + 24:directory + 28] = struct.pack("<I", 0xF0000000)  # uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(InputFormatError, match="forged"):
        load_network(path)


def test_a_one_line_input_naming_row_2147483647_is_refused(tmp_path: Path,
                                                           peak: Callable[[], int]) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("2147483647\t1\t1\n")
    with pytest.raises(InputFormatError, match=r"x.tsv:1: row 2147483647 is beyond"):
        read_input(path, neurons=4)
    assert peak() < SMALL


# ----------------------------------------------------------------------------- finding 4


def bundle(tmp_path: Path, edit: Callable[[dict[str, np.ndarray]], Any],
           meta: dict[str, Any] | None = None) -> Path:
    layer = sp.csr_matrix(([1.0, 0.5, 2.0], ([0, 1, 2], [0, 1, 3])), shape=(4, 4))
    arrays = pack_csr("layer1", layer)
    arrays["layer1.data"] = arrays.pop("layer1.constant", layer.data)
    edit(arrays)
    path = tmp_path / "net.fsdm"
    write_bundle(path, meta or {"kind": "network", "neurons": 4, "depth": 1, "bias": -0.3},
                 arrays)
    return path


def _set(name: str, value: Any) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda arrays: arrays.__setitem__(name, np.asarray(value))


@pytest.mark.parametrize(("edit", "fragment"), [
    (_set("layer1.indices", np.array([0, 1, 9], dtype=np.uint8)), "column index 9 is outside"),
    (_set("layer1.indptr", np.array([0, 2, 1, 3, 3], dtype=np.uint8)), "indptr decreases"),
    (_set("layer1.indptr", np.array([0, 1, 2], dtype=np.uint8)), "indptr has 3 entries"),
    (_set("layer1.data", [1.0, np.nan, 2.0]), "not all finite"),
    (_set("layer1.data", [1.0, np.inf, 2.0]), "not all finite"),
    (_set("layer1.data", np.array([1, 2, 3], dtype=np.int64)), "must be floating point"),
    (_set("layer1.data", np.array(["a", "b", "c"])), "must be floating point"),
    (_set("layer1.data", [1.0, 2.0]), "2 values for 3 indices"),
    (_set("layer1.shape", np.array([4, 4, 4])), "is not two sizes"),
    (_set("layer1.shape", np.array([-4, 4])), "is not two sizes"),
    (_set("layer1.indices", np.array([0.0, 1.0, 3.0])), "must be a vector of integers"),
    (lambda arrays: arrays.pop("layer1.indptr"), "member 'layer1.indptr' is missing"),
])
def test_invalid_bundles_name_the_file_and_the_member(tmp_path: Path, edit: Any,
                                                      fragment: str) -> None:
    with pytest.raises(InputFormatError, match=fragment) as caught:
        load_network(bundle(tmp_path, edit))
    assert str(caught.value).startswith(f"{tmp_path / 'net.fsdm'}: ")


@pytest.mark.parametrize("meta", [
    {"kind": "network", "neurons": 4, "depth": 10**9, "bias": -0.3},
    {"kind": "network", "neurons": 5, "depth": 1, "bias": -0.3},
    {"kind": "network", "neurons": 4, "depth": 1, "bias": "nan"},
    {"kind": "network", "neurons": [4], "depth": 1, "bias": -0.3},
])
def test_inconsistent_metadata_is_refused(tmp_path: Path, meta: dict[str, Any]) -> None:
    with pytest.raises(InputFormatError, match=r"net\.fsdm"):
        load_network(bundle(tmp_path, lambda arrays: None, meta))


def test_a_fake_npy_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.npy"
    np.save(path, np.arange(10))
    with pytest.raises(InputFormatError, match="not a readable fsd-bundle"):
        load_network(path)


def test_activations_and_shards_are_checked(tmp_path: Path) -> None:
    good = write_activations(tmp_path / "y.fsdm", sp.csr_matrix(np.eye(3)), np.arange(3), {})
    assert read_activations(good, "float64")[2].nnz == 3
    write_bundle(tmp_path / "bad-y.fsdm", {"kind": "activations"},
                 {**pack_csr("y", sp.csr_matrix(np.eye(3))),
                  "columns": np.array([0, -1, 2])})
    with pytest.raises(InputFormatError, match="columns: index"):
        read_activations(tmp_path / "bad-y.fsdm", "float64")
    with pytest.raises(InputFormatError, match="not a shard"):
        load_shard(good)
    write_bundle(tmp_path / "shard.fsdm", {"kind": "shard", "depth": 1, "neurons": 4,
                                           "worker": 0, "workers": 1, "bias": 0.0,
                                           "model": "x"}, {"input_columns": np.arange(4)})
    with pytest.raises(InputFormatError, match="inconsistent shard"):
        load_shard(tmp_path / "shard.fsdm")


# ----------------------------------------------------------------------------- finding 5


def raw_body(rows: list[int], counts: list[int], columns: list[int], width: int,
             values: list[float]) -> bytes:
    """A CSR body laid out by hand (codec's layout, 8-byte fields), zstd-compressed."""
    deltas = np.diff(np.asarray(rows, dtype=np.int64), prepend=0).astype(np.uint64)
    head = codec._BODY_HEAD.pack(len(rows), width, len(columns), 2)  # float64
    layout = bytes([codec.PATTERN_CSR, codec.VALUES_RAW, 8, 8, 8, 8])
    raw = b"".join([head, layout, deltas.tobytes(), np.asarray(counts, np.uint64).tobytes(),
                    np.asarray(columns, np.uint64).tobytes(),
                    np.asarray(values, np.float64).tobytes()])
    return zstandard.ZstdCompressor().compress(raw)


def test_a_hand_made_body_decodes() -> None:
    block = decode_body(raw_body([2, 5], [1, 2], [3, 0, 1], 4, [1.0, 2.0, 3.0]))
    assert block.rows.tolist() == [2, 5]
    assert block.values.toarray().tolist() == [[0, 0, 0, 1], [2, 3, 0, 0]]


@pytest.mark.parametrize(("body", "fragment"), [
    (raw_body([2, 5], [1, 2], [4, 0, 1], 4, [1.0, 2.0, 3.0]), "column position 4 is beyond"),
    (raw_body([5, 2], [1, 2], [3, 0, 1], 4, [1.0, 2.0, 3.0]), "not strictly ascending"),
    (raw_body([2, 2], [1, 2], [3, 0, 1], 4, [1.0, 2.0, 3.0]), "not strictly ascending"),
    (raw_body([2, 5], [1, 2], [3, 1, 0], 4, [1.0, 2.0, 3.0]), "ascending within a row"),
    (raw_body([2, 5], [1, 2], [3, 0, 1], 4, [1.0, np.nan, 3.0]), "not all finite"),
])
def test_decoded_blocks_are_checked(body: bytes, fragment: str) -> None:
    with pytest.raises(FrameError, match=fragment):
        decode_body(body)


@pytest.mark.parametrize("field", ["layer", "source", "target", "chunk"])
def test_a_flipped_header_bit_is_rejected(field: str) -> None:
    block = Block(np.array([1], dtype=np.int64), sp.csr_matrix(np.ones((1, 3))))
    frame = bytearray(codec.encode_frames("run-1", 7, 2, 3, codec.encode_body(block),
                                          1 << 20)[0])
    start = codec._FIXED.size + len("run-1")
    offset = start + 4 * ["layer", "source", "target", "chunk"].index(field)
    frame[offset] ^= 0x01
    with pytest.raises(FrameError, match="checksum mismatch"):
        decode_frame(bytes(frame))


# ----------------------------------------------------------------------------- finding 6


def test_a_corrupt_gzip_body_is_an_input_error(tmp_path: Path) -> None:
    ids = "".join(f"{i}\n" for i in range(1, 3000)).encode()
    for name, text, reader in (("x.tsv.gz", b"1\t1\t1\n" * 2000, lambda p: read_input(p)),
                               ("c.txt.gz", ids, read_categories)):
        whole = gzip.compress(text)
        path = tmp_path / name
        path.write_bytes(whole[:20] + bytes(b ^ 0xA5 for b in whole[20:60]) + whole[60:])
        with pytest.raises(InputFormatError, match=f"{name}: cannot be read"):
            reader(path)


@pytest.mark.parametrize(("content", "fragment"), [
    (bytes(range(128, 256)), "cannot be read as a categories file"),
    (b"1\n12345678901234567890123\n", "c.txt:2: expected a row id from 1 to 2147483647"),
    (b"1\n2147483648\n", "c.txt:2"),
])
def test_categories_files_that_are_not(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=fragment):
        read_categories(path)
