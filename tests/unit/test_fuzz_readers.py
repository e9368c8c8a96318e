"""Fuzzing every reader of untrusted bytes: damaged inputs end in the project's own errors.

Each reader gets valid seeds mutated by hypothesis (bytes flipped, truncated, inserted,
replaced, or random bytes altogether) and must either read them or raise an FsdError
subclass; any other exception (MemoryError, IndexError, zlib.error...) fails the test.

The budget is small here (``FSD_FUZZ_EXAMPLES``, default 25 per reader, so ``make test``
stays fast); bench/fuzz_readers.py runs the same tests with thousands of cases per reader
in a subprocess under an address-space limit and reports the peak allocation per reader
(``FSD_FUZZ_REPORT``: tracemalloc around every call).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import tempfile
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsd_inference.channels.codec import (
    Block,
    decode_body,
    decode_frame,
    encode_body,
    encode_frames,
)
from fsd_inference.cli import build_parser
from fsd_inference.cloud.activations import read_activations, write_activations
from fsd_inference.cloud.plan_step import parse_request
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.config import AwsConfig
from fsd_inference.exceptions import FsdError
from fsd_inference.model.binary import load_network, save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.tsv import read_categories, read_input
from fsd_inference.partition.plan import build_plan, load_shard, save_shard

EXAMPLES = int(os.environ.get("FSD_FUZZ_EXAMPLES", "25"))
REPORT = os.environ.get("FSD_FUZZ_REPORT")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="fsd-fuzz-"))
PEAKS: dict[str, int] = defaultdict(int)
CASES: dict[str, int] = defaultdict(int)
OUTCOMES: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


@contextlib.contextmanager
def measured(reader: str) -> Iterator[None]:
    """Counts the case; with FSD_FUZZ_REPORT, also the reader's peak allocation."""
    CASES[reader] += 1
    if REPORT is None:
        yield
        return
    tracemalloc.start()
    try:
        yield
    finally:
        PEAKS[reader] = max(PEAKS[reader], tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def outcome(reader: str, read: Callable[[], Any]) -> None:
    """``read()`` may succeed or raise FsdError; anything else escapes and fails."""
    with measured(reader):
        try:
            read()
            OUTCOMES[reader]["read"] += 1
        except FsdError as exc:
            OUTCOMES[reader][type(exc).__name__] += 1


def pytest_sessionfinish_report() -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps({"cases": CASES, "peak_bytes": PEAKS,
                                            "outcomes": OUTCOMES}, indent=1))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    pytest_sessionfinish_report()


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` damaged the ways files and frames get damaged, or random bytes."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "replace", "random"]))
    data = bytearray(seed)
    if kind == "random" or not data:
        return draw(st.binary(max_size=4096))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    else:
        at = draw(st.integers(0, len(data)))
        chunk = draw(st.binary(min_size=1, max_size=64))
        end = at + (len(chunk) if kind == "replace" else 0)
        data[at:end] = chunk
    return bytes(data)


def written(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- seeds


def _block() -> Block:
    rng = np.random.default_rng(3)
    values = sp.random(12, 40, density=0.3, format="csr", random_state=rng, dtype=np.float64)
    rows = np.sort(rng.choice(1000, size=12, replace=False)).astype(np.int64)
    return Block(rows, sp.csr_matrix(values))


FRAME = encode_frames("fuzz-run", 3, 1, 2, encode_body(_block()), 1 << 20)[0]
BITMAP_FRAME = encode_frames("fuzz-run", 3, 1, 2, encode_body(Block(
    np.arange(30, dtype=np.int64), sp.csr_matrix(np.ones((30, 20))))), 1 << 20)[0]
TSV = b"1\t1\t1\n2\t3\t0.5\n4\t2\t-2.25\n"
CATEGORIES = b"1\n5\n9\n1000\n"
NETWORK = generate(GeneratorParams(64, 2, 1, bias=-0.3))


def _bundle(write: Callable[[Path], Any], name: str) -> bytes:
    path = WORK / f"seed-{name}"
    write(path)
    return path.read_bytes()


BUNDLE = _bundle(lambda p: save_network(NETWORK, p), "network.fsdm")
SHARD = _bundle(lambda p: save_shard(build_plan(NETWORK, np.arange(3 * 64).reshape(3, 64)
                                                % 2, 2)[1][0], p), "shard.fsdm")
ACTIVATIONS = _bundle(lambda p: write_activations(
    p, sp.csr_matrix(np.eye(5, 8)), np.arange(8), {"worker": 0}), "y.fsdm")


# ----------------------------------------------------------------------------- readers


@FUZZ
@given(mutated(FRAME) | mutated(BITMAP_FRAME))
def test_codec(data: bytes) -> None:
    def read() -> None:
        _, payload = decode_frame(data)
        decode_body(payload)

    outcome("codec", read)


@FUZZ
@given(mutated(encode_body(_block())))
def test_codec_body(data: bytes) -> None:
    """Bodies behind a valid CRC (what a buggy or hostile sender could produce)."""
    outcome("codec body", lambda: decode_body(data))


@FUZZ
@given(mutated(TSV) | mutated(gzip.compress(TSV)), st.booleans())
def test_tsv_input(data: bytes, gz: bool) -> None:
    path = written("x.tsv.gz" if gz else "x.tsv", data)
    outcome("tsv", lambda: read_input(path, neurons=64))


@FUZZ
@given(mutated(CATEGORIES) | mutated(gzip.compress(CATEGORIES)))
def test_categories(data: bytes) -> None:
    path = written("cats.txt", data)
    outcome("categories", lambda: read_categories(path))


@FUZZ
@given(mutated(BUNDLE))
def test_network_bundle(data: bytes) -> None:
    path = written("net.fsdm", data)
    outcome("bundle", lambda: load_network(path))


@FUZZ
@given(mutated(SHARD))
def test_shard(data: bytes) -> None:
    path = written("shard.fsdm", data)
    outcome("shard", lambda: load_shard(path, "float64"))


@FUZZ
@given(mutated(ACTIVATIONS))
def test_activations(data: bytes) -> None:
    path = written("y.fsdm", data)
    outcome("activations", lambda: read_activations(path, "float64"))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
FIELDS = ["model", "input", "workers", "channel", "partition", "seed", "dtype",
          "message_limit", "receive_timeout_s", "layers_per_block", "bias", "rows", "expect",
          "run", "strategy", "stages", "groups", "microbatches", "objective", "deadline_s",
          "budget_usd"]
SETTINGS = CloudSettings(aws=AwsConfig(endpoint_url=None, region="us-east-1",
                                       bucket="fsd-fuzz"), partition="random")


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6) | JSON)
def test_request_schema(fields: Any) -> None:
    request = {"model": "models/m.fsdm", "input": "inputs/x.tsv", "workers": 4}
    data = {**request, **fields} if isinstance(fields, dict) else fields
    outcome("request", lambda: parse_request(data, SETTINGS))


TOKENS = st.sampled_from(["--workers", "--neurons", "--layers", "--timeout", "--message-limit",
                          "--rows", "--seed", "--bias", "--older-than", "--block", "nan",
                          "-1", "0", "1e9", "2147483648", "inf", "1h", "x"]) | st.text(max_size=6)


@FUZZ
@given(st.sampled_from(["generate", "infer", "plan", "run", "cleanup", "reference"]),
       st.lists(TOKENS, max_size=6))
def test_cli_arguments(command: str, tokens: list[str]) -> None:
    """Parsing alone: a valid command line or argparse's exit 2, never a traceback."""
    def parse() -> None:
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                build_parser().parse_args([command, *tokens])
            except SystemExit as exc:
                if exc.code != 2:
                    raise
                raise _Refused(" ".join(tokens)) from None

    outcome("cli", parse)


class _Refused(FsdError):
    """argparse refused the command line (exit 2, one line)."""


def test_the_seeds_are_valid() -> None:
    """Control: unmutated, every seed reads (so the fuzzing starts from real inputs)."""
    decode_body(decode_frame(FRAME)[1])
    assert read_input(written("s.tsv", TSV), neurons=64).shape == (4, 64)
    assert list(read_categories(written("s.txt", CATEGORIES))) == [1, 5, 9, 1000]
    assert load_network(written("s.fsdm", BUNDLE)).fingerprint() == NETWORK.fingerprint()
    assert load_shard(written("s-shard.fsdm", SHARD)).worker == 0
    assert read_activations(written("s-y.fsdm", ACTIVATIONS), "float64")[2].shape == (5, 8)
    assert isinstance(build_parser(), argparse.ArgumentParser)
