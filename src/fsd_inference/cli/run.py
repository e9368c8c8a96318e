"""``fsd run``: the serverless application end to end (the main job, ``make run``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.cli.common import add_compute_options, add_model_options, say
from fsd_inference.config import AwsConfig, cache_dir
from fsd_inference.constants import STALL_TIMEOUT_S
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.partition import PARTITIONERS


def cmd_run(args: argparse.Namespace) -> int:
    """The serverless application end to end: embedded local AWS, or --stack on AWS."""
    from fsd_inference.app import RunOptions, run_and_report
    from fsd_inference.app.demo import demo_model
    from fsd_inference.cloud.stack import stack_outputs

    aws = AwsConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None
    if args.stack:  # a wrong stack name fails before the demo network is generated
        stack_outputs(args.stack, aws or AwsConfig())
    options = RunOptions(
        model=Path(args.model) if args.model else demo_model(say),
        input=Path(args.input) if args.input else sample_input_path(),
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype, layers_per_block=args.layers_per_block,
        message_limit=args.message_limit, receive_timeout_s=args.timeout, rows=args.rows,
        bias=args.bias, stall_s=args.stall_timeout)
    out = Path(args.out) if args.out else cache_dir() / "categories.txt"
    return run_and_report(options, out, Path(args.metrics) if args.metrics else None,
                          stack=args.stack, aws=aws, quiet=args.quiet)


# ----------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run", help="the main job: the serverless application end to end (state machine, "
                    "Lambda workers, SQS / S3) on an embedded local AWS, or on a deployed "
                    "stack with --stack")
    add_model_options(run, required=False)
    run.add_argument("--input", help="input TSV (default: the shipped MNIST sample)")
    run.add_argument("--rows", type=int, help="use only the first ROWS inputs")
    run.add_argument("--workers", type=int, default=8, help="number of workers P (default 8)")
    run.add_argument("--channel", default="queue", choices=sorted(AWS_TRANSPORTS),
                     help="communication channel (default queue)")
    run.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    run.add_argument("--seed", type=int, default=0, help="partitioner seed (default 0)")
    run.add_argument("--layers-per-block", type=int,
                     help="layers per worker invocation between checkpoints (default: the "
                          "stack's LayersPerBlock)")
    run.add_argument("--message-limit", type=int,
                     help="largest SQS message in bytes (default: the stack's MessageLimit)")
    run.add_argument("--timeout", type=float,
                     help="longest wait for one layer's messages, seconds (default 120)")
    run.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S,
                     help="stop following an execution that shows no progress for this "
                          f"long, seconds (default {STALL_TIMEOUT_S:g}: a block may be silent for "
                          "a worker's 15 minutes)")
    run.add_argument("--out", help="categories file (default .cache/fsd-inference/"
                                   "categories.txt)")
    run.add_argument("--metrics", help="metrics JSON file to write")
    run.add_argument("--stack", help="run on this deployed stack (sam deploy) instead of the "
                                     "embedded local AWS")
    run.add_argument("--endpoint-url", help="with --stack: the AWS endpoint (default: "
                                            "AWS_ENDPOINT_URL or AWS itself)")
    add_compute_options(run)
    run.set_defaults(func=cmd_run)
