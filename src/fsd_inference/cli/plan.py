"""``fsd plan``: partition a network and report its communication plan."""

from __future__ import annotations

import argparse
import time

import numpy as np

from fsd_inference.cli import arguments
from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    add_compute_options,
    json_options,
    model_options,
    write_json,
)
from fsd_inference.cli.planning import add_planner_options, cmd_planner
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.load import open_model
from fsd_inference.partition import PARTITIONERS
from fsd_inference.partition.cache import ownership
from fsd_inference.partition.plan import plan_traffic


def _spread(values: np.ndarray) -> dict[str, float]:
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def cmd_plan(args: argparse.Namespace) -> int:
    if args.objective or args.input:
        return cmd_planner(args)
    if args.workers is None:
        raise ConfigError("fsd plan needs --workers P (the partition report) or --input I "
                          "with --objective cost|latency (the planner)")
    with open_model(args.model, bias=args.bias) as network:  # streamed, layer by layer
        return _plan(args, network)


def _plan(args: argparse.Namespace, network: NetworkSource) -> int:
    started = time.perf_counter()
    owned = ownership(network, args.partition, args.workers, args.seed)
    plan = plan_traffic(network, owned.owners, args.workers)
    seconds = time.perf_counter() - started
    sent, copies = plan.neurons_per_layer, plan.copies.sum(axis=(1, 2))
    work = plan.work  # (L, P) nonzeros
    imbalance = work.max(axis=1) / np.maximum(work.mean(axis=1), 1e-12)
    source = f"cached, {owned.path}" if owned.cached else f"partitioned, cached at {owned.path}"
    print(f"{args.partition} partition of {network.neurons} neurons x {network.depth} layers "
          f"for P = {args.workers} (seed {args.seed}): {owned.seconds:.2f} s ({source})")
    for label, values in (("neurons sent per layer", sent), ("neuron copies per layer", copies),
                          ("messages per layer", plan.messages_per_layer)):
        spread = _spread(values)
        print(f"{label}: min {spread['min']:,.0f}, mean {spread['mean']:,.1f}, "
              f"max {spread['max']:,.0f}; total {int(values.sum()):,}")
    print("work per worker (nonzeros owned, all layers): "
          + ", ".join(f"{int(v):,}" for v in work.sum(axis=0))
          + f"; largest share / mean per layer: worst {imbalance.max():.3f}")
    print(f"plan: {seconds:.1f} s in all (partition included)")
    if args.json:
        document = {
            "model": {"path": str(args.model), "neurons": network.neurons,
                      "layers": network.depth, "fingerprint": network.fingerprint()},
            "partition": {"name": args.partition, "workers": args.workers, "seed": args.seed,
                          "seconds": owned.seconds, "plan_seconds": seconds,
                          "cached": owned.cached,
                          "path": str(owned.path)},
            # columns sent (twins once) = words per input row; copies = |R_l(q, p)|
            "neurons_sent": {"total": int(sent.sum()), **_spread(sent),
                             "per_layer": sent.tolist()},
            "neuron_copies": {"total": int(copies.sum()), **_spread(copies),
                              "per_layer": copies.tolist()},
            "messages_per_layer": plan.messages_per_layer.tolist(),
            "work": {"per_worker": work.sum(axis=0).astype(int).tolist(),
                     "max_over_mean_per_layer": imbalance.tolist()},
        }
        write_json(document, args.json, "plan summary")
    return 0


def register(sub: Subparsers) -> None:
    pln = add_command(
        sub, "plan", summary="choose how to distribute a job (the planner), or report one "
                             "partition's communication plan",
        description="With --input and --objective: the planner. It enumerates candidate "
                    "plans (data parallel, pipelines, groups x stages hybrids, neuron "
                    "parallel) under Lambda's limits (memory, 15 minutes per invocation, "
                    "MaxWorkers), predicts each one's time and cost on AWS with fsd "
                    "predict's model, filters by --deadline and --budget and prints the "
                    "ranked table with the choice and why (these are predictions: see the "
                    "README). With --workers: split the neurons of every layer among P "
                    "workers with a partitioner and report the communication plan that "
                    "follows from the weights (neuron columns each layer sends, twins once, "
                    "copies, messages per layer, work per worker). Partitions are cached by "
                    "model fingerprint, so the same plan is reused by fsd infer and fsd run.",
        examples=["fsd plan --model n1024.fsdm --input mnist.tsv.gz --objective cost",
                  "fsd plan --model n1024.fsdm --input mnist.tsv.gz --objective latency "
                  "--budget 0.01 --json plan.json",
                  "fsd plan --model n1024.fsdm --input mnist.tsv.gz --objective cost "
                  "--deadline 30 --max-workers 16 --strategies data pipeline",
                  "fsd plan --model n1024.fsdm --workers 8",
                  "fsd plan --model n1024.fsdm --workers 16 --json - | jq .neurons_sent.total"],
        parents=[model_options(), json_options("the plan (planner) or the plan summary")])
    pln.add_argument("--workers", type=arguments.cloud_workers,
                     help="number of workers P (the partition report)")
    pln.add_argument("--input", help="input TSV (optionally .gz): plan the job with the "
                                     "planner")
    add_compute_options(pln)
    add_planner_options(pln.add_argument_group("planner (with --input / --objective)"))
    pln.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    pln.add_argument("--seed", type=arguments.seed, default=0, help="partitioner seed (default 0)")
    pln.set_defaults(func=cmd_plan)
