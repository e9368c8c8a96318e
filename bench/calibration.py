"""Generator calibration: the categorised fraction of the MNIST sample per N, depth, block.

For each (N, layers, block) the generated network is streamed layer by layer straight
into the reference inference (nothing is written to disk) on the first ``--rows`` rows
of the shipped sample, upsampled to N pixels as the Graph Challenge does. One JSON line
per run goes to stdout (and to ``--out`` if given). The choice of the default block per
N (model/generate.py BLOCK_BY_NEURONS) and the README table come from these lines.

    .venv/bin/python bench/calibration.py --neurons 4096 --layers 120 --blocks 1 2 4 8 16 \
        --rows 2000

Budget: 1024 x 120, 10,000 rows, one block: about 15 s; 65536 x 120, 1,000 rows: minutes
per block (2 cores, shared). The fraction from r rows has a standard error of about
sqrt(f (1 - f) / r): 0.5 points at 3% and 1,000 rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import scipy.sparse as sp

from fsd_inference.model.generate import GeneratedNetwork, GeneratorParams
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input


def sample(neurons: int, rows: int) -> sp.csr_matrix:
    images = sp.csr_matrix(read_input(sample_input_path(), neurons=1024)[:rows])
    return images if neurons == 1024 else upsample(images, neurons)


def measure(neurons: int, layers: int, block: int, period: int | None,
            inputs: sp.csr_matrix, seed: int = 0) -> dict[str, float | int | None]:
    params = GeneratorParams(neurons, layers, seed, block, period=period)
    network = GeneratedNetwork(params)
    started = time.perf_counter()
    result = infer(network, inputs)
    rows = int(inputs.shape[0])
    fraction = result.categories.size / rows
    return {"neurons": neurons, "layers": layers, "block": block, "period": period,
            "strides": params.cycle(), "rows": rows,
            "bias": network.bias, "categorised": int(result.categories.size),
            "fraction": fraction,
            "stderr": math.sqrt(fraction * (1 - fraction) / rows),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[120])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--periods", type=int, nargs="+", default=[0],
                        help="strides per cycle (0: the calibrated or full butterfly)")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="append the JSON lines here too")
    args = parser.parse_args()
    inputs = sample(args.neurons, args.rows)
    for layers in args.layers:
        for block, period in itertools.product(args.blocks, args.periods):
            line = json.dumps(measure(args.neurons, layers, block, period or None, inputs))
            print(line, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")


if __name__ == "__main__":
    main()
