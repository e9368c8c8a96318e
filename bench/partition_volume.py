"""Traffic of each partitioner on a generated network: what the partition decides.

    .venv/bin/python bench/partition_volume.py [--neurons 1024] [--layers 120] [--workers 8]
        [--per-layer] [--json FILE] [--infer-metrics hypergraph=metrics.json ...]

For the hypergraph, random and contiguous partitions (never read from the cache, so the
time is a real partitioning): partition time (wall and CPU), columns sent per layer and
in total (twins once: the words each input row costs), neuron copies |R_l(q, p)| (the
figure the published system reports: ~3,600 per layer for its partition of the real
1024 x 120 network, 8 workers), messages per layer and the worst layer's work balance.

Bytes exchanged need a real run: ``--run`` runs the inference over the memory channel
(real worker processes, the frames a cloud channel carries) with the 10,000 MNIST sample
inputs for each partition and checks the categories against the reference; or pass
``NAME=FILE`` with the ``--metrics`` JSON of an earlier ``fsd infer --partition NAME``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import input_file, network_file, say
from fsd_inference.app.infer import InferOptions, run_inference
from fsd_inference.model.binary import load_network
from fsd_inference.model.reference import infer
from fsd_inference.model.tsv import read_input
from fsd_inference.partition import Partitioner, get_partitioner
from fsd_inference.partition.hypergraph import HypergraphPartitioner
from fsd_inference.partition.plan import plan_traffic

PARTITIONS = ("hypergraph", "random", "contiguous")


def measured_bytes(metrics: Path | None) -> int | None:
    """Bytes a real ``fsd infer`` run sent, from its metrics file; None when not run."""
    if metrics is None:
        return None
    document = json.loads(metrics.read_text(encoding="utf-8"))
    return int(document["summary"]["totals"]["bytes_sent"])


def run_bytes(name: str, network: Any, workers: int, seed: int) -> int:
    """Run the inference for real over the memory channel; the frame bytes it sent."""
    say(f"running {name} over the memory channel")
    inputs = read_input(input_file(network.neurons), neurons=network.neurons)
    result = run_inference(network, inputs, InferOptions(workers=workers, partition=name,
                                                         seed=seed))
    expected = infer(network, inputs).categories
    if not np.array_equal(result.categories, expected):
        raise SystemExit(f"{name}: categories differ from the reference")
    return int(result.metrics_document()["summary"]["totals"]["bytes_sent"])


def partitioner(name: str) -> Partitioner:
    """A registered partitioner, or ``stream``: the hypergraph model with every layer
    partitioned in one streaming pass (what layers above STREAM_ABOVE vertices get)."""
    return HypergraphPartitioner(stream_above=0) if name == "stream" else get_partitioner(name)


def measure(name: str, network: Any, workers: int, seed: int) -> dict[str, Any]:
    say(f"partitioning with {name}")
    wall, cpu = time.perf_counter(), time.process_time()
    owners = partitioner(name).partition(network, workers, seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    plan = plan_traffic(network, owners, workers)
    sent, copies = plan.neurons_per_layer, plan.copies.sum(axis=(1, 2))
    work = plan.work
    return {
        "partition": name, "seconds": wall, "cpu_seconds": cpu,
        "sent_total": int(sent.sum()), "sent_per_layer": sent.tolist(),
        "copies_total": int(copies.sum()), "copies_per_layer": copies.tolist(),
        "messages_per_layer": plan.messages_per_layer.tolist(),
        "worst_balance": float((work.max(axis=1) / work.mean(axis=1)).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="partitioner seed")
    parser.add_argument("--per-layer", action="store_true", help="also print every layer")
    parser.add_argument("--stream", action="store_true",
                        help="also the streaming pass on every layer (against Mt-KaHyPar)")
    parser.add_argument("--json", help="write all numbers here")
    parser.add_argument("--run", action="store_true",
                        help="run the inference per partition to measure bytes sent")
    parser.add_argument("--infer-metrics", action="append", default=[], metavar="NAME=FILE",
                        help="metrics JSON of an `fsd infer --partition NAME` run")
    args = parser.parse_args()
    metrics = dict(item.split("=", 1) for item in args.infer_metrics)
    network = load_network(network_file(args.neurons, args.layers))
    names = (*PARTITIONS, "stream") if args.stream else PARTITIONS
    rows = [measure(name, network, args.workers, args.seed) for name in names]
    for row in rows:
        given = metrics.get(row["partition"])
        runnable = args.run and row["partition"] in PARTITIONS  # stream is no CLI name
        row["bytes_sent"] = (run_bytes(row["partition"], network, args.workers, args.seed)
                             if runnable else measured_bytes(Path(given) if given else None))

    print(f"\n{args.neurons} x {args.layers}, {args.workers} workers, seed {args.seed}")
    header = (f"{'partition':<11} {'time s':>7} {'cpu s':>6} {'sent/layer':>10} "
              f"{'min':>6} {'max':>6} {'sent total':>11} {'copies/layer':>12} "
              f"{'copies total':>12} {'msgs/layer':>10} {'balance':>7} {'bytes sent':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        sent = np.asarray(row["sent_per_layer"])
        copies = np.asarray(row["copies_per_layer"])
        size = "-" if row["bytes_sent"] is None else f"{row['bytes_sent']:,}"
        print(f"{row['partition']:<11} {row['seconds']:>7.2f} {row['cpu_seconds']:>6.2f} "
              f"{sent.mean():>10,.1f} {sent.min():>6,} {sent.max():>6,} "
              f"{row['sent_total']:>11,} {copies.mean():>12,.1f} {row['copies_total']:>12,} "
              f"{np.mean(row['messages_per_layer']):>10.1f} {row['worst_balance']:>7.3f} "
              f"{size:>12}")
    print("sent = columns sent (twins once); copies = |R_l(q, p)| summed; balance = worst "
          "layer's largest work share / mean; bytes sent: --run or --infer-metrics, else -")
    if args.per_layer:
        print("\nlayer " + " ".join(f"{row['partition']:>11}" for row in rows))
        for k in range(args.layers):
            print(f"{k + 1:>5} " + " ".join(f"{row['sent_per_layer'][k]:>11,}" for row in rows))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "neurons": args.neurons, "layers": args.layers, "workers": args.workers,
            "seed": args.seed, "partitions": rows}, indent=1), encoding="utf-8")
        say(f"written to {args.json}")


if __name__ == "__main__":
    main()
