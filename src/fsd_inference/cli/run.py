"""``fsd run``: the serverless application end to end (the main job, ``make run``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.cli import arguments
from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    add_strategy_options,
    compute_options,
    json_options,
    model_options,
    say,
)
from fsd_inference.cli.planning import DEFAULT_CHANNEL, reject_shape_options
from fsd_inference.config import AwsConfig
from fsd_inference.constants import STALL_TIMEOUT_S
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.partition import PARTITIONERS
from fsd_inference.strategy import AUTO

DEFAULT_OUT = "categories.txt"  # in the working directory, where the user looks


def cmd_run(args: argparse.Namespace) -> int:
    """The serverless application end to end: embedded local AWS, or --stack on AWS."""
    from fsd_inference.app import RunOptions, run_and_report
    from fsd_inference.app.demo import demo_model
    from fsd_inference.cloud.stack import stack_outputs

    if args.plot:  # before the run, not after it
        from fsd_inference.analysis.plot import require_matplotlib

        require_matplotlib()
    aws = AwsConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None
    if args.stack:  # a wrong stack name fails before the demo network is generated
        stack_outputs(args.stack, aws or AwsConfig())
    args.model = args.model or str(demo_model(say))
    args.input = args.input or str(sample_input_path())
    if args.strategy == AUTO:  # the Plan step asks the planner (cloud/auto_plan.py)
        reject_shape_options(args)
    elif args.objective:
        raise ConfigError("--objective applies to --strategy auto only")
    else:
        args.channel = args.channel or DEFAULT_CHANNEL
    options = RunOptions(
        model=Path(args.model), input=Path(args.input),
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype, layers_per_block=args.layers_per_block,
        message_limit=args.message_limit, receive_timeout_s=args.timeout, rows=args.rows,
        bias=args.bias, strategy=args.strategy, stages=args.stages, groups=args.groups,
        microbatches=args.microbatches, stall_s=args.stall_timeout, objective=args.objective)
    epilogue = None
    if args.strategy != AUTO and args.planner_view and args.json != "-":
        from fsd_inference.app.planner_view import planner_view_lines

        def epilogue(metrics: dict[str, Any]) -> list[str]:
            return planner_view_lines(Path(args.model), Path(args.input), args.rows,
                                      args.dtype, args.bias, metrics)

    return run_and_report(options, Path(args.out), args.json, stack=args.stack, aws=aws,
                          quiet=args.quiet, plot=Path(args.plot) if args.plot else None,
                          epilogue=epilogue)


# ----------------------------------------------------------------------------- parser


def register(sub: Subparsers) -> None:
    run = add_command(
        sub, "run", summary="the main job: the serverless application end to end (state "
                            "machine, Lambda workers, SQS / S3) on an embedded local AWS, or "
                            "on a deployed stack with --stack",
        description="Run the serverless application end to end. Without --stack: start an "
                    "embedded AWS (moto on loopback), deploy template.yaml into it, upload "
                    "the model and input, and run one execution of the state machine (Plan, "
                    "blocks of layers in which the workers exchange activations, Gather, "
                    "Cleanup) with the project's handlers as Lambda functions. With --stack "
                    "NAME: the same against a stack deployed with sam deploy. Shows the "
                    "progress (percentage of worker tasks, ETA), then the categories "
                    "checked against the single-process reference, the time per phase, the "
                    "traffic, the API calls and the modelled AWS cost. Without --model: the "
                    "demo network, 1024 neurons x 120 layers (generated once, cached).",
        examples=["fsd run                                # the demo (make run)",
                  "fsd run --rows 1000 --workers 4 --channel object --plot run.png",
                  "fsd run --json - | jq .summary.totals  # metrics on stdout",
                  "fsd run --model n4096.fsdm --input mnist-4096.tsv.gz --out cats.txt",
                  "fsd run --stack fsd-inference          # on AWS, after sam deploy"],
        parents=[model_options(required=False), compute_options(),
                 json_options("the metrics (per worker and layer, phases, API calls, cost)",
                              alias="--metrics")])
    run.add_argument("--input", help="input TSV (default: the shipped MNIST sample)")
    run.add_argument("--rows", type=arguments.positive_int, help="use only the first ROWS inputs")
    run.add_argument("--workers", type=arguments.cloud_workers, default=8,
                     help="number of tasks: Lambda workers per block (default 8)")
    add_strategy_options(run, "neuron", auto=True)
    run.add_argument("--channel", default=None, choices=sorted(AWS_TRANSPORTS),
                     help=f"communication channel (default {DEFAULT_CHANNEL}; with "
                          f"--strategy auto, the planner's choice)")
    run.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    run.add_argument("--seed", type=arguments.seed, default=0, help="partitioner seed (default 0)")
    run.add_argument("--layers-per-block", type=arguments.layers,
                     help="layers per worker invocation between checkpoints (default: the "
                          "stack's LayersPerBlock)")
    run.add_argument("--message-limit", type=arguments.message_limit,
                     help="largest SQS message in bytes (default: the stack's MessageLimit)")
    run.add_argument("--timeout", type=arguments.receive_timeout,
                     help="longest wait for one layer's messages, seconds (default 120)")
    run.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S,
                     help="stop following an execution that shows no progress for this "
                          f"long, seconds (default {STALL_TIMEOUT_S:g}: a block may be silent for "
                          "a worker's 15 minutes)")
    run.add_argument("--out", default=DEFAULT_OUT,
                     help=f"categories file (default {DEFAULT_OUT} in the working directory)")
    run.add_argument("--plot", metavar="PNG",
                     help="also draw the run's timeline and traffic heatmap here (needs "
                          "matplotlib: the 'plot' extra)")
    run.add_argument("--no-planner-view", dest="planner_view", action="store_false",
                     help="do not end with the planner's view of the same job (what "
                          "--strategy auto would choose, predicted on AWS: a few seconds)")
    run.add_argument("--stack", help="run on this deployed stack (sam deploy) instead of the "
                                     "embedded local AWS")
    run.add_argument("--endpoint-url", help="with --stack: the AWS endpoint (default: "
                                            "AWS_ENDPOINT_URL or AWS itself)")
    run.set_defaults(func=cmd_run)
