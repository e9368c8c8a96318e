"""The CLI's shape, through the real ``fsd`` command: help with examples, one
``--json FILE|-`` for machine-readable output (stdout then holds only the JSON), plots,
where the categories go, and the progress lines of ``fsd run``."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fsd_inference.cli import COMMANDS, EXIT_BROKEN_PIPE, build_parser
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input

RunFsd = Callable[..., Any]
ROWS = 120
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net-1024x4.fsdm"
    save_network(generate(GeneratorParams(1024, 4, 1)), path)
    return path


@pytest.fixture(scope="module")
def expected(model: Path) -> np.ndarray:
    from fsd_inference.model.load import load_model

    inputs = read_input(sample_input_path(), neurons=1024)[:ROWS]
    return infer(load_model(model), inputs).categories


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ROWS sample inputs as a file (fsd infer and reference take every row)."""
    with gzip.open(sample_input_path(), "rt", encoding="utf-8") as handle:
        lines = [line for line in handle if int(line.split("\t")[0]) <= ROWS]
    path = tmp_path_factory.mktemp("inputs") / "first.tsv"
    path.write_text("".join(lines))
    return path


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_description_and_runnable_examples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # --expect is read while parsing: give it files to read
    commands = subcommands()
    assert len(commands) >= len(COMMANDS)
    for name, parser in commands.items():
        text = parser.format_help()
        assert parser.description and len(parser.description) > 60, name
        examples = text.split("examples:\n", 1)[1].splitlines()
        assert examples and all(line.startswith(f"  fsd {name}") or "fsd " in line
                                for line in examples if line.strip()), (name, examples)
        own = [line for line in examples if line.strip().startswith(f"fsd {name}")]
        for line in own:  # each example of the command parses as written
            argv = line.split("#")[0].split("|")[0].split("&&")[0].split()[1:]
            for option, value in itertools.pairwise(argv):
                if option == "--expect":
                    (tmp_path / value).write_text("1\n")
            parsed = build_parser().parse_args(argv)
            assert parsed.command == name


def test_one_json_option_everywhere_with_the_old_metrics_name_kept() -> None:
    commands = subcommands()
    with_json = {name for name, parser in commands.items()
                 if any("--json" in a.option_strings for a in parser._actions)}
    assert with_json == {"plan", "infer", "run", "report", "reference", "predict"}
    for name in ("infer", "run"):
        action = next(a for a in commands[name]._actions if "--json" in a.option_strings)
        assert action.option_strings == ["--json", "--metrics"]


def test_json_to_stdout_leaves_stdout_pure(run_fsd_batch: Callable[..., Any], model: Path,
                                          inputs: Path, expected: np.ndarray,
                                          tmp_path: Path) -> None:
    (tmp_path / "ref.txt").write_text("".join(f"{c}\n" for c in expected))
    plan, ref, infer_run, old_name = run_fsd_batch([
        (("plan", "--model", model, "--workers", 3, "--json", "-"), tmp_path),
        (("reference", "--model", model, "--input", inputs, "--out", "r.txt", "--json", "-"),
         tmp_path),
        (("infer", "--model", model, "--input", inputs, "--workers", 2, "--out", "cats.txt",
          "--json", "-", "--expect", "ref.txt"), tmp_path),
        (("infer", "--model", model, "--input", inputs, "--workers", 2, "--out", "c2.txt",
          "--metrics", "m.json"), tmp_path)])
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["partition"]["workers"] == 3
    assert "partition of 1024 neurons x 4 layers" in plan.stderr

    assert ref.returncode == 0, ref.stderr
    assert json.loads(ref.stdout)["categories"] == expected.tolist()
    assert "categories:" in ref.stderr
    assert f"categories written to {tmp_path.resolve() / 'r.txt'}" in ref.stderr

    assert infer_run.returncode == 0, infer_run.stderr
    metrics = json.loads(infer_run.stdout)
    assert metrics["categories"] == expected.size and len(metrics["per_worker"]) == 2
    assert "match: identical to ref.txt" in infer_run.stderr
    assert f"categories written to {tmp_path.resolve() / 'cats.txt'}" in infer_run.stderr

    assert old_name.returncode == 0, old_name.stderr
    assert "metrics written to m.json" in old_name.stdout
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["workers"] == 2

    (report,) = run_fsd_batch([(("report", "m.json", "--json", "-", "--plot", "m.png"),
                                tmp_path)])
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    bytes_sent = sum(w["totals"]["bytes_sent"] for w in written["per_worker"])
    assert summary["workers"] == 2 and summary["traffic_bytes"]["total"] == bytes_sent > 0
    assert [w["bytes_sent"] for w in summary["per_worker"]] == [
        w["totals"]["bytes_sent"] for w in written["per_worker"]]
    assert "plot written to m.png" in report.stderr
    assert (tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)


def test_report_names_a_file_that_is_not_metrics(run_fsd: RunFsd, tmp_path: Path,
                                                assert_clean_error: Any) -> None:
    (tmp_path / "plan.json").write_text(json.dumps({"partition": {"workers": 2}}))
    assert_clean_error(run_fsd("report", "plan.json"), "plan.json", "per_worker")
    assert_clean_error(run_fsd("report", "missing.json"), "missing.json")


def test_plots_without_matplotlib_fail_at_once_saying_how_to_install(
        run_fsd: RunFsd, tmp_path: Path, assert_clean_error: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A matplotlib that cannot be imported (as when the plot extra is not installed)."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    done = run_fsd("run", "--rows", "10", "--plot", "run.png")
    assert_clean_error(done, "matplotlib", "pip install 'fsd-inference[plot]'")
    assert "embedded AWS" not in done.stderr  # nothing started
    assert not (tmp_path / "categories.txt").exists()


def test_fsd_run_plots_writes_categories_here_and_reports_progress(
        run_fsd: RunFsd, model: Path, expected: np.ndarray, tmp_path: Path) -> None:
    done = run_fsd("run", "--model", model, "--rows", ROWS, "--workers", 2,
                   "--partition", "random", "--layers-per-block", 2, "--timeout", 20,
                   "--plot", "run.png", "--json", "-")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)  # stdout is the metrics document alone
    assert metrics["driver"]["reference_match"] is True and metrics["blocks"] == 2
    written = np.loadtxt(tmp_path / "categories.txt", dtype=np.int64, ndmin=1)
    np.testing.assert_array_equal(written, expected)
    assert f"categories written to {tmp_path.resolve() / 'categories.txt'}" in done.stderr
    with Image.open(tmp_path / "run.png") as image:
        assert image.format == "PNG" and image.size[0] > 1000
    # progress in a log: lines with percentage, the block and its workers done
    progress = re.findall(r"^(block \d/2(?: done)?|gathering|cleaning up|succeeded): +(\d+)% "
                          r"(\d)/4 \[[^\]]*\](?: (\d)/2 workers done)?$", done.stderr,
                          re.MULTILINE)
    assert progress, done.stderr
    assert progress[-1][1:3] == ("100", "4")
    for label, percent, tasks, workers in progress:
        assert int(percent) == 25 * int(tasks)
        if label == "block 2/2" and workers:
            assert int(tasks) == 2 + int(workers)  # block 1's two, and this block's
    ends = [(label, tasks, workers) for label, _, tasks, workers in progress
            if label.endswith("done")]
    assert ends == [("block 1/2 done", "2", "2"), ("block 2/2 done", "4", "2")]


def test_a_reader_that_stops_early_ends_fsd_quietly(tmp_path: Path,
                                                    fsd_argv: list[str]) -> None:
    """``fsd report big.json | head -1``: a closed stdout is not an error to report."""
    workers = [{"worker": p, "bytes_to": {}, "totals": {}, "layers": [
        {"layer": 1, "compute_s": 0.1, "wait_s": 0.1}]} for p in range(4000)]
    (tmp_path / "big.json").write_text(json.dumps({"per_worker": workers}))
    process = subprocess.Popen([*fsd_argv, "report", "big.json"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout and process.stderr
    assert process.stdout.readline().startswith(b"run: 4000 workers x 1 layers")
    process.stdout.close()  # far more than a pipe holds is still to come
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert process.stderr.read() == b""
