"""Shared fixtures: plain-Python writers for the public text layout and an ``fsd`` runner.

The writers here deliberately do not use the project's own writers, so a test that reads
their files checks the readers against the published format, not against themselves.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

Triple = tuple[int, int, float]
"""One ``row<TAB>col<TAB>value`` entry, indices 1-based as in the files."""

FSD_TIMEOUT_S = 120


@dataclass(frozen=True)
class FsdRun:
    """The outcome of one ``fsd`` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def fsd_command() -> list[str]:
    """The installed ``fsd`` console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("fsd")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "fsd_inference.cli"]


@pytest.fixture(scope="session")
def fsd_argv() -> list[str]:
    """The command that starts ``fsd``, for tests that drive the process themselves."""
    return fsd_command()


def format_triples(triples: Iterable[Triple]) -> str:
    """Lines in the Graph Challenge layout; ``repr`` of a float round-trips exactly."""
    return "".join(f"{row}\t{col}\t{value!r}\n" for row, col, value in triples)


def write_text_file(path: Path, text: str) -> Path:
    """Write ``text``; a ``.gz`` suffix gzips it. Parents are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# Sets a file size limit, then becomes the command (exec keeps both the limit and the
# ignored SIGXFSZ), so writes past the limit fail with EFBIG as on a full disk. Thread-safe,
# unlike subprocess's preexec_fn.
_LIMITED = (
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _run_fsd(args: Sequence[object], cwd: Path, cache: Path,
             file_size_limit: int | None = None) -> FsdRun:
    command = [*fsd_command(), *(str(a) for a in args)]
    if file_size_limit is not None:
        command = [sys.executable, "-c", _LIMITED, str(file_size_limit), *command]
    env = {**os.environ, "FSD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=FSD_TIMEOUT_S, check=False)
    return FsdRun(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def run_fsd(tmp_path: Path) -> Callable[..., FsdRun]:
    """``run_fsd(*args, cwd=None, file_size_limit=None)``: the real ``fsd`` in a subprocess,
    cwd = tmp_path; ``file_size_limit`` (bytes) makes larger writes fail as on a full disk."""

    def run(*args: object, cwd: Path | None = None, file_size_limit: int | None = None
            ) -> FsdRun:
        return _run_fsd(args, cwd or tmp_path, tmp_path / ".cache", file_size_limit)

    return run


@pytest.fixture(scope="session")
def run_fsd_batch() -> Callable[..., list[FsdRun]]:
    """``run_fsd_batch(jobs, file_size_limit=None)``: many independent ``fsd`` commands,
    each ``(args, cwd)``, run at once; the results in the order of ``jobs``.

    Start-up dominates a small ``fsd`` run, so overlapping them keeps long tables of
    cases fast on a few cores.
    """

    def run(jobs: Sequence[tuple[Sequence[object], Path]],
            file_size_limit: int | None = None) -> list[FsdRun]:
        workers = max(2, os.cpu_count() or 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_fsd, args, cwd, cwd / ".cache", file_size_limit)
                       for args, cwd in jobs]
            return [f.result() for f in futures]

    return run


@pytest.fixture
def write_triples(tmp_path: Path) -> Callable[..., Path]:
    """``write_triples(name, triples)`` -> a TSV under tmp_path (``.gz`` names are gzipped)."""

    def write(name: str, triples: Iterable[Triple]) -> Path:
        return write_text_file(tmp_path / name, format_triples(triples))

    return write


@pytest.fixture
def write_network(tmp_path: Path) -> Callable[..., Path]:
    """``write_network(layers, neurons, name)`` -> a folder of ``n{N}-l{k}.tsv`` files.

    ``layers[k]`` is the list of 1-based triples of layer k + 1.
    """

    def write(layers: Sequence[Iterable[Triple]], neurons: int, name: str = "net") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, triples in enumerate(layers, start=1):
            write_text_file(folder / f"n{neurons}-l{k}.tsv", format_triples(triples))
        return folder

    return write


@pytest.fixture
def assert_clean_error() -> Callable[..., None]:
    """Check a failed run: non-zero exit, one readable stderr line naming what it must."""

    def check(run: FsdRun, *fragments: str) -> None:
        assert run.returncode != 0, f"expected a failure, got exit 0; stdout={run.stdout!r}"
        assert "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr_lines) == 1, f"expected one stderr line, got:\n{run.stderr}"
        line = run.stderr_lines[0]
        assert "error" in line, line
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not in {line!r}"

    return check


@dataclass(frozen=True)
class HandCase:
    """A 4-neuron, 2-layer network small enough to infer on paper (see the test)."""

    neurons: int
    layers: tuple[tuple[Triple, ...], ...]
    inputs: tuple[Triple, ...]


@pytest.fixture(scope="session")
def hand_case() -> HandCase:
    """The network worked through by hand in tests/unit/test_model_reference.py.

    Inputs (rows 1..4, 4 pixels): x1 = [1, 0, 2, 0], x2 = [0, 0, 0, 4], x3 = [0, 1, 0, 0],
    x4 = [0, 0, 0, 0.125]. W1: (1,1)=1, (1,2)=2, (3,2)=-1, (2,3)=-3, (4,4)=8.
    W2: (1,2)=1, (1,4)=-0.25, (2,3)=1, (4,1)=-1, (4,3)=1. All values are dyadic, so every
    intermediate result is exact in float32 as well as float64.
    """
    return HandCase(
        neurons=4,
        layers=(
            ((1, 1, 1.0), (1, 2, 2.0), (2, 3, -3.0), (3, 2, -1.0), (4, 4, 8.0)),
            ((1, 2, 1.0), (1, 4, -0.25), (2, 3, 1.0), (4, 1, -1.0), (4, 3, 1.0)),
        ),
        inputs=((1, 1, 1.0), (1, 3, 2.0), (2, 4, 4.0), (3, 2, 1.0), (4, 4, 0.125)),
    )


EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


@pytest.fixture
def load_event() -> Callable[[str], dict[str, object]]:
    """``load_event("plan_small")`` -> the parsed ``events/plan_small.json``: the sample
    events of template.yaml's functions, used as they are by the handler tests."""

    def load(name: str) -> dict[str, object]:
        data: dict[str, object] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
        return data

    return load
