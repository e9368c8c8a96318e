"""Shared set-up for the benchmarks: cached generated networks and inputs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fsd_inference.config import cache_dir
from fsd_inference.model.binary import save_network
from fsd_inference.model.generate import GeneratedNetwork, GeneratorParams
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.tsv import read_input, write_input


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def network_file(neurons: int, layers: int, seed: int = 0, block: int | None = None
                 ) -> Path:
    """The generated network (``fsd generate --block``, default calibrated by N) as a
    bundle, made once and cached."""
    suffix = "" if block is None else f"-b{block}"
    path = cache_dir() / f"radixnet-{neurons}x{layers}-seed{seed}{suffix}.fsdm"
    if not path.is_file():
        say(f"generating {neurons} x {layers} (seed {seed}, block {block or 'by N'}) "
            f"into {path}")
        save_network(GeneratedNetwork(GeneratorParams(neurons, layers, seed, block)), path)
    return path


def input_file(neurons: int) -> Path:
    """The 10,000 MNIST sample rows, upsampled for ``neurons`` > 1024 and cached."""
    if neurons == 1024:
        return sample_input_path()
    path = cache_dir() / f"mnist-{neurons}-first10k.tsv"
    if not path.is_file():
        say(f"upsampling the sample to {neurons} pixels into {path}")
        write_input(upsample(read_input(sample_input_path(), neurons=1024), neurons), path)
    return path


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


FSD = str(Path(sys.executable).with_name("fsd"))  # the console script beside this Python


def timed(command: list[str]) -> float:
    """Wall seconds of ``command`` (a subprocess), its stdout echoed; exits on a failure."""
    say("$ " + " ".join(command))
    with Stopwatch() as watch:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()}")
    print(done.stdout.strip())
    return watch.seconds
