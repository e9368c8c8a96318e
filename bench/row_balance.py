"""How evenly row groups share the work: contiguous ranges against the batch order.

    .venv/bin/python bench/row_balance.py [--neurons 4096] [--layers 120] [--block 16]
        [--groups 2 4 8 16 32]

One reference pass (``predict.trace.trace_run``, about the time of `fsd reference`)
counts every row's multiply-adds in every layer (its nonzeros times their fan-out in W).
For each number of groups G it prints the largest group's share of the multiply-adds
over the mean share (1.0 is perfect balance; a data run's layers take as long as its
largest group) for G contiguous ranges of the inputs as given and for G ranges of the
batch order (strategy/shape.py: what the Plan step deals out). The slowest task of a
data or hybrid run waits on the largest group, so this ratio is what the order saves.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import input_file, network_file
from fsd_inference.model.load import open_model
from fsd_inference.model.tsv import read_input
from fsd_inference.predict.trace import trace_run
from fsd_inference.strategy.shape import batch_order, split_evenly


def largest_share(work: np.ndarray, groups: int) -> float:
    """max / mean of the work of ``groups`` contiguous ranges of ``work``."""
    bounds = split_evenly(work.size, groups)
    shares = np.add.reduceat(work, bounds[:-1])
    return float(shares.max() / shares.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--block", type=int, default=16, help="fsd generate --block")
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    args = parser.parse_args()
    network = open_model(network_file(args.neurons, args.layers, block=args.block))
    inputs = read_input(input_file(args.neurons), neurons=network.neurons)
    trace = trace_run(network, inputs, "float64", (), "bench", 1 << 40)
    in_order = trace.row_flops.sum(axis=0)  # per position of the batch order
    as_given = np.empty_like(in_order)
    as_given[batch_order(in_order.size)] = in_order  # per input row
    print(f"{args.neurons} x {args.layers} (block {args.block}), {in_order.size:,} rows: "
          f"largest group's multiply-adds / mean")
    print(f"  {'groups':>6}  {'contiguous':>10}  {'batch order':>11}")
    for groups in args.groups:
        print(f"  {groups:>6}  {largest_share(as_given, groups):>10.3f}  "
              f"{largest_share(in_order, groups):>11.3f}")


if __name__ == "__main__":
    main()
