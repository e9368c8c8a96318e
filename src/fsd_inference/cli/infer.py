"""``fsd infer``: distributed inference over P local worker processes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fsd_inference.app.infer import InferOptions, infer_files
from fsd_inference.channels import AWS_TRANSPORTS, NO_EXCHANGE, TRANSPORTS, ChannelConfig
from fsd_inference.cli import arguments
from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    add_kernel_options,
    add_strategy_options,
    categories_written,
    check_expected,
    compute_options,
    json_options,
    model_options,
    say,
    write_json,
)
from fsd_inference.cli.planning import resolve_auto
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.config import AwsConfig
from fsd_inference.local import aws_for_run
from fsd_inference.model.tsv import write_categories
from fsd_inference.partition import PARTITIONERS
from fsd_inference.progress import Progress


def cmd_infer(args: argparse.Namespace) -> int:
    with aws_for_run(args.channel in AWS_TRANSPORTS, say) as aws:
        return _infer(args, aws)


def _infer(args: argparse.Namespace, aws: AwsConfig) -> int:
    if args.strategy is None:  # today's default with --workers, the planner's without
        args.strategy = "neuron" if args.workers else "auto"
    if args.workers is None:  # auto: the most tasks this machine and a deployment hold
        args.workers = min(arguments.local_worker_limit(), CloudSettings().max_workers)
    resolve_auto(args, args.channel)
    options = InferOptions(
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype, strategy=args.strategy, stages=args.stages, groups=args.groups,
        microbatches=args.microbatches, layers_per_block=args.layers_per_block,
        bias=args.bias, kernel=args.kernel, threads=args.threads,
        config=ChannelConfig(max_message_bytes=args.message_limit,
                             receive_timeout_s=args.timeout, aws=aws),
    )
    say(f"{args.workers} task(s), {args.strategy} strategy, {args.channel} channel, "
        f"{args.partition} partition")
    started = time.perf_counter()
    result = infer_files(Path(args.model), Path(args.input), options,
                         Progress("steps", quiet=args.quiet), activations=False)
    seconds = time.perf_counter() - started
    write_categories(result.categories, args.out)
    document = result.metrics_document()
    totals, plan, run = document["summary"]["totals"], document["plan"], result.run
    print(
        f"categories: {len(result.categories):,} of {run.batch:,} inputs | "
        f"{run.neurons} neurons x {run.depth} layers, {args.dtype} | {seconds:.2f} s | "
        f"{run.batch * plan['edges'] / seconds:.3e} edges/s"
    )
    print(f"shape: {run.shape.describe()}")
    print(
        f"traffic: {plan['neuron_copies_total']:,} neuron copies needed, "
        f"{plan['neurons_sent_total']:,} sent (twins once), "
        f"{int(totals.get('bytes_sent', 0)):,} bytes in "
        f"{int(totals.get('messages_sent', 0)):,} messages "
        f"({int(totals.get('frames_sent', 0)):,} frames)"
    )
    print("phases: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in result.phases.items()))
    categories_written(args.out)
    write_json(document, args.json)
    return check_expected(result.categories, args.expect)


def register(sub: Subparsers) -> None:
    inf = add_command(
        sub, "infer", summary="distributed inference over local worker processes, any strategy",
        description="The serverless application's own steps (plan, workers, gather, "
                    "cleanup) on this machine: one process per task, the run's objects in a "
                    "local folder instead of S3. --strategy says how the work is split: "
                    "neuron (every layer split over the workers, activations exchanged "
                    "every layer over a channel: memory, or queue and object on SQS and S3, "
                    "an embedded moto server unless an AWS endpoint is configured), data "
                    "(the rows split, no exchange), pipeline (stages of layers streaming "
                    "micro-batches), hybrid (their combinations). The categories are "
                    "bit-for-bit those of fsd reference, whatever the strategy.",
        examples=["fsd infer --model n1024.fsdm --input data/mnist-1024-first10k.tsv.gz "
                  "--workers 8 --out cats.txt",
                  "fsd infer --model n1024.fsdm --input in.tsv --workers 4 --channel queue "
                  "--out cats.txt --json metrics.json --expect reference-cats.txt",
                  "fsd infer --model n1024.fsdm --input in.tsv --workers 4 --out cats.txt "
                  "--json - | jq .summary.totals",
                  "fsd infer --model n1024.fsdm --input in.tsv --workers 2 --strategy data "
                  "--out cats.txt",
                  "fsd infer --model n1024.fsdm --input in.tsv --workers 3 --strategy pipeline "
                  "--microbatches 12 --out cats.txt",
                  "fsd infer --model n1024.fsdm --input in.tsv --workers 8 --strategy hybrid "
                  "--groups 2 --stages 2 --out cats.txt",
                  "fsd report metrics.json --plot run.png"],
        parents=[model_options(), compute_options(),
                 json_options("the metrics (per worker and layer: time, traffic, calls)",
                              alias="--metrics")])
    inf.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    inf.add_argument("--workers", type=arguments.local_workers,
                     help="number of tasks (worker processes; Lambda functions on AWS); "
                          "with --strategy auto the most it may use (default: the local "
                          "limit)")
    add_strategy_options(inf, None, auto=True,
                         default_text="neuron with --workers, auto without")
    inf.add_argument("--layers-per-block", type=arguments.layers,
                     help="layers per task process between checkpoints (default: all)")
    inf.add_argument("--channel", default="memory",
                     choices=sorted(set(TRANSPORTS) - {NO_EXCHANGE}),
                     help="communication channel (default memory)")
    inf.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    inf.add_argument("--seed", type=arguments.seed, default=0, help="partitioner seed (default 0)")
    inf.add_argument("--message-limit", type=arguments.message_limit,
                     default=ChannelConfig.max_message_bytes,
                     help="largest message in bytes (default 1 MiB; SQS also 256 KiB)")
    inf.add_argument("--timeout", type=arguments.positive_seconds,
                     default=ChannelConfig.receive_timeout_s,
                     help="longest wait for one layer's messages, seconds")
    inf.add_argument("--out", required=True, help="categories file to write")
    inf.add_argument("--expect", type=arguments.categories_file,
                     help="categories file to compare with (exit 3 on mismatch)")
    add_kernel_options(inf, workers=True)
    inf.set_defaults(func=cmd_infer)
