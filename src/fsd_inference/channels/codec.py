"""Binary frames for activation blocks: header, compact sparse layout, zstd, chunks.

A *block* is what worker ``source`` sends worker ``target`` for layer ``l``: the rows
of ``Y_{l-1}[:, R_l(source, target)]`` that have any nonzero, as a CSR matrix whose
columns are positions in R (both sides know R from the plan, so no neuron ids travel).
An empty block (no rows) is the explicit "nothing for you" marker.

Body layout (before compression), all little-endian:
    u32 rows, u32 width, u32 nnz, u8 dtype code
    row ids    : delta-coded (ascending), narrowest unsigned int that fits
    row counts : nonzeros per row, narrowest unsigned int that fits
    columns    : positions in R, narrowest unsigned int that fits ``width``
    values     : raw float32 / float64 (exact round trip)
The body is zstd-compressed, then cut into chunks of at most ``max_chunk`` bytes; each
chunk becomes one frame with a fixed header:

    magic "FSD1" | u8 flags | u8 exec-id length | exec id | u32 layer | u32 source |
    u32 target | u32 chunk | u32 chunks | u32 payload length | u32 crc32(payload)

so a corrupt or truncated frame is detected before anything is decoded.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import zstandard

from fsd_inference.exceptions import FsdError

MAGIC = b"FSD1"
_FIXED = struct.Struct("<4sBB")
_TAIL = struct.Struct("<IIIIIII")
_BODY_HEAD = struct.Struct("<IIIB")
DTYPE_CODES: dict[np.dtype[Any], int] = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}
CODE_DTYPES: dict[int, np.dtype[Any]] = {code: dtype for dtype, code in DTYPE_CODES.items()}
ZSTD_LEVEL = 3
MAX_EXECUTION_ID = 80


class FrameError(FsdError):
    """A frame is corrupt, truncated or not ours."""


@dataclass(frozen=True)
class Block:
    """Rows ``rows`` (ids in the batch) of one sender's activations for one target."""

    rows: np.ndarray
    values: sp.csr_matrix  # len(rows) x width

    @property
    def empty(self) -> bool:
        return self.rows.size == 0

    @classmethod
    def from_columns(cls, activations: sp.csr_matrix) -> Block:
        """The nonzero rows of ``activations`` (already restricted to the columns R)."""
        rows = np.flatnonzero(np.diff(activations.indptr))
        return cls(rows.astype(np.int64), sp.csr_matrix(activations[rows]))


@dataclass(frozen=True)
class FrameHeader:
    execution: str
    layer: int
    source: int
    target: int
    chunk: int
    chunks: int
    length: int
    checksum: int

    @property
    def message_key(self) -> tuple[int, int]:
        return (self.layer, self.source)


def _narrow(values: np.ndarray) -> np.ndarray:
    top = int(values.max()) if values.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.uint64)


_WIDTHS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def encode_body(block: Block) -> bytes:
    values = block.values
    if values.shape[0] != block.rows.size:
        raise ValueError("block rows and values disagree")
    dtype = np.dtype(values.dtype)
    if dtype not in DTYPE_CODES:
        raise ValueError(f"unsupported dtype {dtype}")
    values = sp.csr_matrix(values)
    values.sort_indices()
    parts = [
        _narrow(np.diff(block.rows, prepend=0)),
        _narrow(np.diff(values.indptr)),
        _narrow(values.indices),
    ]
    head = _BODY_HEAD.pack(block.rows.size, values.shape[1], values.nnz, DTYPE_CODES[dtype])
    sizes = bytes(part.dtype.itemsize for part in parts)
    raw = b"".join([head, sizes, *(p.tobytes() for p in parts), values.data.tobytes()])
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def decode_body(body: bytes) -> Block:
    try:
        raw = zstandard.ZstdDecompressor().decompress(body)
        n_rows, width, nnz, code = _BODY_HEAD.unpack_from(raw, 0)
        offset = _BODY_HEAD.size
        sizes = raw[offset:offset + 3]
        offset += 3
        arrays = []
        for size, count in zip(sizes, (n_rows, n_rows, nnz), strict=True):
            dtype = np.dtype(_WIDTHS[size])
            arrays.append(np.frombuffer(raw, dtype=dtype, count=count, offset=offset))
            offset += dtype.itemsize * count
        value_dtype = CODE_DTYPES[code]
        data = np.frombuffer(raw, dtype=value_dtype, count=nnz, offset=offset)
        if offset + value_dtype.itemsize * nnz != len(raw):
            raise ValueError("trailing bytes")
    except (zstandard.ZstdError, struct.error, KeyError, ValueError) as exc:
        raise FrameError(f"undecodable block body: {exc}") from exc
    rows = np.cumsum(arrays[0].astype(np.int64))
    indptr = np.concatenate(([0], np.cumsum(arrays[1].astype(np.int64))))
    values = sp.csr_matrix((data.copy(), arrays[2].astype(np.int32), indptr),
                           shape=(n_rows, width))
    return Block(rows, values)


def encode_frames(execution: str, layer: int, source: int, target: int, body: bytes,
                  max_chunk: int) -> list[bytes]:
    """Cut ``body`` into frames whose total size (header included) fits ``max_chunk``."""
    exec_id = execution.encode()
    if len(exec_id) > MAX_EXECUTION_ID:
        raise ValueError(f"execution id longer than {MAX_EXECUTION_ID} bytes")
    header_size = _FIXED.size + len(exec_id) + _TAIL.size
    room = max_chunk - header_size
    if room <= 0:
        raise ValueError(f"max_chunk {max_chunk} leaves no room for a payload")
    pieces = [body[i:i + room] for i in range(0, len(body), room)] or [b""]
    frames = []
    for index, piece in enumerate(pieces):
        head = _FIXED.pack(MAGIC, 0, len(exec_id)) + exec_id
        tail = _TAIL.pack(layer, source, target, index, len(pieces), len(piece),
                          zlib.crc32(piece))
        frames.append(head + tail + piece)
    return frames


def frame_overhead(execution: str) -> int:
    return _FIXED.size + len(execution.encode()) + _TAIL.size


def decode_frame(frame: bytes) -> tuple[FrameHeader, bytes]:
    """Parse and verify one frame; raises FrameError naming what is wrong."""
    if len(frame) < _FIXED.size:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than a header")
    magic, _flags, id_length = _FIXED.unpack_from(frame, 0)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}: not an fsd frame")
    start = _FIXED.size + id_length
    if len(frame) < start + _TAIL.size:
        raise FrameError("truncated frame header")
    execution = frame[_FIXED.size:start].decode(errors="replace")
    layer, source, target, chunk, chunks, length, checksum = _TAIL.unpack_from(frame, start)
    payload = frame[start + _TAIL.size:]
    header = FrameHeader(execution, layer, source, target, chunk, chunks, length, checksum)
    where = f"frame layer {layer} from {source} to {target} chunk {chunk + 1}/{chunks}"
    if len(payload) != length:
        raise FrameError(f"{where}: payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != checksum:
        raise FrameError(f"{where}: checksum mismatch")
    if chunks < 1 or chunk >= chunks:
        raise FrameError(f"{where}: invalid chunk numbering")
    return header, payload
