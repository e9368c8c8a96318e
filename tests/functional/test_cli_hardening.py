"""Finding 7: every bad invocation the probe found ends with exit 2 and one clean line,
before any work starts (no output written, nothing computed, no emulator started).

Arguments are refused while the command line is parsed (cli/arguments.py), so their
line names the argument; files are refused by the readers, naming the file.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

GOOD_LAYER = "1\t1\t1\n2\t2\t0.5\n3\t4\t2\n4\t4\t1\n"
GOOD_INPUT = "1\t1\t1\n2\t2\t1\n"
REFERENCE = ("reference", "--model", "net", "--bias", "-0.3", "--input", "x.tsv",
             "--out", "out.txt", "--quiet")
INFER = ("infer", "--model", "net", "--bias", "-0.3", "--input", "x.tsv", "--out", "out.txt",
         "--quiet")


def corrupt_gzip() -> bytes:
    whole = gzip.compress(("1\t1\t1\n2\t2\t1\n" * 500).encode())
    return whole[:40] + bytes(b ^ 0x5A for b in whole[40:80]) + whole[80:]


def fake_npy(path: Path) -> None:
    np.save(path, np.arange(12))


# name: (arguments, files to write, fragments the one line must hold)
CASES: dict[str, tuple[tuple[str, ...], dict[str, Any], tuple[str, ...]]] = {
    "fake-npy-model": (("reference", "--model", "model.npy", "--input", "x.tsv", "--out",
                        "out.txt"), {"model.npy": fake_npy}, ("model.npy", "not a readable")),
    "corrupt-gzip-input": ((*REFERENCE[:5], "--input", "bad.tsv.gz", *REFERENCE[7:]),
                           {"bad.tsv.gz": corrupt_gzip()}, ("bad.tsv.gz",)),
    "huge-row-id": ((*REFERENCE[:5], "--input", "huge.tsv", *REFERENCE[7:]),
                    {"huge.tsv": "1\t1\t1\n2147483647\t1\t1\n"}, ("huge.tsv:2", "2147483647")),
    "huge-column-id": ((*REFERENCE[:5], "--input", "wide.tsv", *REFERENCE[7:]),
                       {"wide.tsv": "1\t2147483647\t1\n"}, ("wide.tsv:1", "column")),
    "23-digit-expect": ((*REFERENCE, "--expect", "cats.txt"),
                        {"cats.txt": "1\n12345678901234567890123\n"}, ("--expect", "cats.txt:2")),
    "binary-expect": ((*REFERENCE, "--expect", "cats.bin"), {"cats.bin": bytes(range(256)) * 8},
                      ("--expect", "cats.bin", "cannot be read")),
    "binary-expect-infer": ((*INFER, "--workers", "2", "--expect", "cats.bin"),
                            {"cats.bin": bytes(range(256)) * 8}, ("--expect", "cats.bin")),
    "message-limit-0": ((*INFER, "--workers", "2", "--message-limit", "0"), {},
                        ("--message-limit", "between 1,024")),
    "timeout-nan": ((*INFER, "--workers", "2", "--timeout", "nan"), {},
                    ("--timeout", "finite")),
    "timeout-negative": ((*INFER, "--workers", "2", "--timeout", "-1"), {},
                         ("--timeout", "more than 0")),
    "huge-workers": ((*INFER, "--workers", "100000"), {}, ("--workers", "100,000")),
    "huge-neurons": (("generate", "--neurons", "2147483648", "--layers", "2", "--out", "gen"),
                     {}, ("--neurons", "2,147,483,648")),
    "huge-layers": (("generate", "--neurons", "1024", "--layers", "10000000", "--out", "gen"),
                    {}, ("--layers",)),
    "plan-huge-workers": (("plan", "--model", "net", "--bias", "-0.3", "--workers", "100000"),
                          {}, ("--workers",)),
    "run-zero-workers": (("run", "--workers", "0"), {}, ("--workers", "between 1")),
    "run-negative-rows": (("run", "--rows", "-5"), {}, ("--rows", "between 1")),
    "run-timeout-over-schema": (("run", "--timeout", "600"), {}, ("--timeout", "120")),
    "bias-infinite": ((*REFERENCE[:4], "inf", *REFERENCE[5:]), {}, ("--bias", "finite")),
    "seed-negative": ((*INFER, "--workers", "2", "--seed", "-1"), {}, ("--seed",)),
    "cleanup-bad-duration": (("cleanup", "--stack", "s", "--older-than", "soon"), {},
                             ("--older-than", "duration")),
}


def materialise(root: Path, files: dict[str, Any]) -> None:
    (root / "net").mkdir()
    for k in (1, 2):
        (root / "net" / f"n4-l{k}.tsv").write_text(GOOD_LAYER, encoding="utf-8")
    (root / "x.tsv").write_text(GOOD_INPUT, encoding="utf-8")
    for name, content in files.items():
        if callable(content):
            content(root / name)
        elif isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            (root / name).write_text(content, encoding="utf-8")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory,
             run_fsd_batch: Callable[..., list[Any]]) -> dict[str, tuple[Any, bool]]:
    jobs, roots, befores = [], [], []
    for name, (args, files, _) in CASES.items():
        root = tmp_path_factory.mktemp(name)
        materialise(root, files)
        befores.append(snapshot(root))
        roots.append(root)
        jobs.append((args, root))
    runs = run_fsd_batch(jobs)
    return {name: (run, snapshot(root) == before)
            for name, run, root, before in zip(CASES, runs, roots, befores, strict=True)}


@pytest.mark.parametrize("name", list(CASES))
def test_every_bad_invocation_is_one_line_and_exit_2(outcomes: dict[str, tuple[Any, bool]],
                                                     assert_clean_error: Callable[..., None],
                                                     name: str) -> None:
    run, untouched = outcomes[name]
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert_clean_error(run, *CASES[name][2])
    assert untouched, "nothing was written: the error came before any work"
    assert run.stdout == "", "no progress or results were printed"
