"""The activation codec: exact round trips, chunking, and rejection of damaged frames."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_inference.channels.codec import (
    Block,
    FrameError,
    decode_body,
    decode_frame,
    encode_body,
    encode_frames,
    frame_overhead,
)


def random_block(rng: np.random.Generator, rows: int, width: int, density: float,
                 dtype: str) -> Block:
    values = sp.random(rows, width, density=density, format="csr", random_state=rng,
                       dtype=np.float64)
    values.data = (values.data * 40 - 4).astype(dtype)  # arbitrary, incl. negatives
    values.eliminate_zeros()
    ids = np.sort(rng.choice(100_000, size=rows, replace=False))
    return Block(ids.astype(np.int64), sp.csr_matrix(values, dtype=dtype))


def assert_same(a: Block, b: Block) -> None:
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.values.shape == b.values.shape
    assert a.values.dtype == b.values.dtype
    assert (a.values != b.values).nnz == 0
    # bit-for-bit: compare the raw bytes of the canonical data
    x, y = sp.csr_matrix(a.values), sp.csr_matrix(b.values)
    x.sort_indices()
    y.sort_indices()
    assert x.data.tobytes() == y.data.tobytes()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 60), width=st.integers(1, 3000), density=st.floats(0, 1),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_body_round_trip_is_exact(rows: int, width: int, density: float, dtype: str,
                                  seed: int) -> None:
    block = random_block(np.random.default_rng(seed), rows, width, density, dtype)
    assert_same(decode_body(encode_body(block)), block)


def test_empty_block_is_a_marker() -> None:
    empty = Block(np.zeros(0, np.int64), sp.csr_matrix((0, 17), dtype=np.float32))
    decoded = decode_body(encode_body(empty))
    assert decoded.empty
    assert decoded.values.shape == (0, 17)


def test_from_columns_keeps_only_nonzero_rows() -> None:
    y = sp.csr_matrix(np.array([[0, 0], [1.5, 0], [0, 0], [0, 2.0]]))
    block = Block.from_columns(y)
    assert block.rows.tolist() == [1, 3]
    assert block.values.toarray().tolist() == [[1.5, 0], [0, 2.0]]


@pytest.mark.parametrize("limit", [256 * 1024, 1024 * 1024, 600])
def test_frames_fit_the_limit_and_reassemble(limit: int) -> None:
    body = np.random.default_rng(1).bytes(3 * limit + 17)
    frames = encode_frames("exec-1", 7, 2, 5, body, limit)
    assert all(len(f) <= limit for f in frames)
    assert len(frames) == -(-len(body) // (limit - frame_overhead("exec-1")))
    parts = {}
    for frame in frames:
        header, payload = decode_frame(frame)
        assert (header.execution, header.layer, header.source, header.target) == (
            "exec-1", 7, 2, 5)
        assert header.chunks == len(frames)
        parts[header.chunk] = payload
    assert b"".join(parts[i] for i in range(len(frames))) == body


def test_the_part_travels_in_the_header_and_keys_the_message() -> None:
    frames = encode_frames("exec-1", 4, 2, 1, b"x" * 1000, 400, part=3)
    headers = [decode_frame(frame)[0] for frame in frames]
    assert len(headers) > 1
    assert {(h.layer, h.part, h.source, h.target) for h in headers} == {(4, 3, 2, 1)}
    assert {h.message_key for h in headers} == {(4, 3, 2)}
    (default,) = encode_frames("exec-1", 4, 2, 1, b"x", 400)
    assert decode_frame(default)[0].part == 0


def test_frames_of_the_old_layout_are_refused() -> None:
    (frame,) = encode_frames("exec", 3, 1, 0, b"payload", 1024)
    with pytest.raises(FrameError, match="magic"):
        decode_frame(b"FSD1" + frame[4:])


def test_a_body_that_fills_the_frame_exactly_is_one_frame() -> None:
    limit = 4096
    body = b"x" * (limit - frame_overhead("e"))
    assert len(encode_frames("e", 1, 0, 1, body, limit)) == 1
    assert len(encode_frames("e", 1, 0, 1, body + b"y", limit)) == 2


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f[:10], "truncated"),
        (lambda f: f[:-1], "payload is"),
        (lambda f: f[:-1] + bytes([f[-1] ^ 0xFF]), "checksum"),
        (lambda f: b"XXXX" + f[4:], "magic"),
        (lambda f: f[:2], "shorter than a header"),
    ],
)
def test_damaged_frames_are_rejected(mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    frame = encode_frames("exec", 3, 1, 0, b"some payload bytes", 1024)[0]
    with pytest.raises(FrameError, match=message):
        decode_frame(mangle(frame))


def test_garbage_body_is_rejected() -> None:
    with pytest.raises(FrameError, match="undecodable"):
        decode_body(b"not zstd at all")
