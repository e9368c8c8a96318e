"""Every kind of bad input, through the real ``fsd`` command.

Each case must end with a non-zero exit, exactly one readable stderr line that names the
file and the line (or the folder and the layer), no traceback, and the categories file
it was asked to write left exactly as it was.
"""

from __future__ import annotations

import gzip
import io
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import scipy.sparse as sp

from fsd_inference.model.binary import save_network
from fsd_inference.model.network import Network

GOOD_LAYER = "1\t1\t1\n2\t2\t0.5\n3\t4\t2\n4\t4\t1\n"
GOOD_INPUT = "1\t1\t1\n2\t2\t1\n2\t3\t0.5\n"
PREVIOUS = "previous categories\n"
# Stand-ins replaced by damaged copies of a real bundle when a case is materialised.
TRUNCATED_BUNDLE = b"<the first two thirds of a valid bundle>"
FLIPPED_BUNDLE = b"<a valid bundle with its first deflate stream damaged>"


@dataclass(frozen=True)
class Case:
    """Files to write over (or, with None, remove from) a valid 4-neuron, 2-layer set-up."""

    files: dict[str, str | bytes | None]
    fragments: tuple[str, ...]
    model: str = "net"
    extra: tuple[str, ...] = field(default_factory=tuple)


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def bundle_bytes() -> bytes:
    """A valid bundle of a 4-neuron network, for the damaged-bundle cases."""
    layer = sp.csr_matrix(([1.0, 0.5, 2.0], ([0, 1, 2], [0, 1, 3])), shape=(4, 4))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "good.fsdm"
        save_network(Network(4, (layer, layer), -0.3), target)
        return target.read_bytes()


def flipped_in_compressed_data(data: bytes) -> bytes:
    """Damage the middle of the first member's deflate stream, so that it no longer
    decodes (rather than decoding to bytes the CRC check would reject)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        first = archive.infolist()[0]
    header = first.header_offset
    name_length = int.from_bytes(data[header + 26:header + 28], "little")
    extra_length = int.from_bytes(data[header + 28:header + 30], "little")
    middle = header + 30 + name_length + extra_length + first.compress_size // 3
    damaged = bytearray(data)
    for offset in range(middle, middle + 4):
        damaged[offset] ^= 0xFF
    return bytes(damaged)


CASES: dict[str, Case] = {}


def case(name: str, *files: tuple[str, str | bytes | None], fragments: tuple[str, ...],
         model: str = "net", extra: tuple[str, ...] = ()) -> None:
    """Register a case."""
    CASES[name] = Case(dict(files), fragments, model, extra)


L2 = "net/n4-l2.tsv"
# Malformed lines.
case("layer-two-fields", (L2, "1\t1\t1\n1\t2\n"), fragments=(f"{L2}:2", "fields"))
case("layer-four-fields", (L2, "1\t1\t1\n\n1\t2\t3\t4\n"), fragments=(f"{L2}:3", "fields"))
case("layer-value-not-a-number", (L2, "1\t1\t1\n1\t2\tabc\n"), fragments=(f"{L2}:2", "abc"))
case("layer-index-not-a-number", (L2, "1\t1\t1\nx\t2\t1\n"), fragments=(f"{L2}:2", "'x'"))
case("input-two-fields", ("x.tsv", "1\t1\t1\n2\t1\n"), fragments=("x.tsv:2", "fields"))
case("input-value-not-a-number", ("x.tsv", "1\t1\t1\n2\t1\t1,5\n"), fragments=("x.tsv:2",))
case("input-fractional-index", ("x.tsv", "1\t1\t1\n2\t1.5\t1\n"), fragments=("x.tsv:2",))
case("input-space-separated", ("x.tsv", "1\t1\t1\n2 1 1\n"), fragments=("x.tsv:2",))
# Indices out of range, zero or negative.
case("layer-column-beyond-n", (L2, "1\t1\t1\n1\t5\t1\n"), fragments=(f"{L2}:2", "column 5"))
case("layer-row-beyond-n", ("net/n4-l1.tsv", "5\t1\t1\n"),
     fragments=("net/n4-l1.tsv:1", "row 5"))
case("layer-zero-index", (L2, "1\t1\t1\n0\t1\t1\n"), fragments=(f"{L2}:2", ">= 1"))
case("layer-negative-index", (L2, "1\t1\t1\n1\t-3\t1\n"), fragments=(f"{L2}:2", ">= 1"))
case("input-zero-row", ("x.tsv", "0\t1\t1\n"), fragments=("x.tsv:1", ">= 1"))
case("input-huge-index", ("x.tsv", "1\t1\t1\n1\t99999999999999999999\t1\n"),
     fragments=("x.tsv:2",))
case("input-wider-than-network", ("x.tsv", "1\t1\t1\n2\t5\t1\n"),
     fragments=("x.tsv:2", "column 5", "4 neurons"))
# Folder consistency.
case("mixed-neuron-counts", (L2, None), ("net/n5-l2.tsv", GOOD_LAYER),
     fragments=("net", "4, 5"))
case("missing-layer", (L2, None), ("net/n4-l3.tsv", GOOD_LAYER),
     fragments=("net", "layer file(s) 2"))
case("no-layer-files", ("net/n4-l1.tsv", None), (L2, None), ("net/README", "no layers here"),
     fragments=("net", "no layer files"))
case("missing-folder", model="absent", fragments=("absent",))
case("missing-input", ("x.tsv", None), fragments=("x.tsv", "no such file"))
# Values.
case("layer-nan", (L2, "1\t1\t1\n1\t2\tnan\n"), fragments=(f"{L2}:2", "not finite"))
case("layer-infinity", (L2, "1\t1\tInfinity\n"), fragments=(f"{L2}:1", "not finite"))
case("input-minus-inf", ("x.tsv", "1\t1\t1\n2\t2\t-inf\n"), fragments=("x.tsv:2", "finite"))
case("input-overflow", ("x.tsv", "1\t1\t1e999\n"), fragments=("x.tsv:1", "not finite"))
case("bias-nan", extra=("--bias", "nan"), fragments=("bias",))
# Empty files.
case("empty-layer", (L2, ""), fragments=(L2, "empty"))
case("empty-input", ("x.tsv", ""), fragments=("x.tsv", "empty"))
case("empty-gzip-input", ("x.tsv", None), ("x.tsv.gz", gz("")), fragments=("x.tsv.gz", "empty"))
case("input-gz-not-gzip", ("x.tsv", None), ("x.tsv.gz", GOOD_INPUT), fragments=("x.tsv.gz",))
# Duplicates.
case("layer-duplicate", (L2, "1\t1\t1\n2\t2\t1\n1\t1\t3\n"),
     fragments=(f"{L2}:3", "duplicate", "row 1, column 1"))
case("input-duplicate-gz", ("x.tsv", None), ("x.tsv.gz", gz("1\t1\t1\n1\t2\t1\n1\t2\t1\n")),
     fragments=("x.tsv.gz:3", "duplicate"))
# Damaged bundles.
case("bundle-truncated", ("net.fsdm", TRUNCATED_BUNDLE), model="net.fsdm", fragments=("net.fsdm",))
case("bundle-text", ("net.fsdm", "1\t1\t1\n"), model="net.fsdm", fragments=("net.fsdm",))
case("bundle-empty", ("net.fsdm", b""), model="net.fsdm", fragments=("net.fsdm",))
case("bundle-corrupt-data", ("net.fsdm", FLIPPED_BUNDLE), model="net.fsdm", fragments=("net.fsdm",))


def params() -> list[object]:
    return [pytest.param(entry, id=name) for name, entry in CASES.items()]


def materialise(root: Path, files: dict[str, str | bytes | None]) -> None:
    whole = bundle_bytes() if any(name.endswith(".fsdm") for name in files) else b""
    base: dict[str, str | bytes | None] = {
        "net/n4-l1.tsv": GOOD_LAYER, "net/n4-l2.tsv": GOOD_LAYER, "x.tsv": GOOD_INPUT,
        "out.txt": PREVIOUS,
    }
    for name, content in {**base, **files}.items():
        path = root / name
        if content is None:
            continue
        if content == TRUNCATED_BUNDLE:
            content = whole[: len(whole) * 2 // 3]
        elif content == FLIPPED_BUNDLE:
            content = flipped_in_compressed_data(whole)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class Outcome:
    run: Any
    before: dict[str, bytes]
    after: dict[str, bytes]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory,
             run_fsd_batch: Callable[..., list[Any]]) -> dict[str, Outcome]:
    """Every case, each in its own folder, run concurrently once for the module."""
    jobs, befores = [], []
    for name, bad in CASES.items():
        root = tmp_path_factory.mktemp(name)
        materialise(root, bad.files)
        befores.append(snapshot(root))
        source = "x.tsv.gz" if (root / "x.tsv.gz").exists() else "x.tsv"
        extra = bad.extra if "--bias" in bad.extra else ("--bias", "-0.3", *bad.extra)
        args = ("reference", "--model", bad.model, "--input", source, "--out", "out.txt",
                "--quiet", *extra)
        jobs.append((args, root))
    runs = run_fsd_batch(jobs)
    return {name: Outcome(run, before, snapshot(root))
            for name, run, before, (_, root) in zip(CASES, runs, befores, jobs, strict=True)}


@pytest.mark.parametrize("bad", params())
def test_bad_input_is_one_clean_error_line(request: pytest.FixtureRequest,
                                           outcomes: dict[str, Outcome],
                                           assert_clean_error: Callable[..., None],
                                           bad: Case) -> None:
    outcome = outcomes[request.node.callspec.id]
    assert_clean_error(outcome.run, *bad.fragments)
    assert outcome.after == outcome.before  # categories untouched, no partial or stray files


def test_the_good_set_up_runs(tmp_path: Path, run_fsd: Callable[..., Any]) -> None:
    """Control: without a defect, the same command succeeds and writes the categories."""
    materialise(tmp_path, {})
    run = run_fsd("reference", "--model", "net", "--input", "x.tsv", "--out", "out.txt",
                  "--bias", "-0.3", "--quiet")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "1\n2\n"
    assert run.stderr == ""


def test_malformed_expect_file_names_its_line(tmp_path: Path, run_fsd: Callable[..., Any],
                                              assert_clean_error: Callable[..., None]) -> None:
    materialise(tmp_path, {"expect.txt": "1\n1\n"})
    run = run_fsd("reference", "--model", "net", "--input", "x.tsv", "--out", "out.txt",
                  "--bias", "-0.3", "--quiet", "--expect", "expect.txt")
    assert_clean_error(run, "expect.txt:2", "ascending")


def test_generate_without_a_default_bias(tmp_path: Path, run_fsd: Callable[..., Any],
                                         assert_clean_error: Callable[..., None]) -> None:
    run = run_fsd("generate", "--neurons", "96", "--layers", "2", "--out", "gen")
    assert_clean_error(run, "96 neurons", "--bias")
    assert not (tmp_path / "gen").exists()


def test_inputs_to_an_impossible_size(tmp_path: Path, run_fsd: Callable[..., Any],
                                      assert_clean_error: Callable[..., None]) -> None:
    (tmp_path / "x.tsv").write_text(GOOD_INPUT, encoding="utf-8")
    run = run_fsd("inputs", "--neurons", "5000", "--from", "x.tsv", "--out", "big.tsv")
    assert_clean_error(run, "5000")
    assert not (tmp_path / "big.tsv").exists()


def test_output_path_that_is_a_directory(tmp_path: Path, run_fsd: Callable[..., Any],
                                         assert_clean_error: Callable[..., None]) -> None:
    materialise(tmp_path, {})
    (tmp_path / "outdir").mkdir()
    before = snapshot(tmp_path)
    run = run_fsd("reference", "--model", "net", "--input", "x.tsv", "--out", "outdir",
                  "--bias", "-0.3", "--quiet")
    assert snapshot(tmp_path) == before
    assert_clean_error(run, "outdir")
