"""The planner on the command line: ``fsd plan --objective`` and ``--strategy auto``.

Not a command of its own: ``fsd plan`` runs :func:`cmd_planner` when given ``--input`` or
``--objective``, and ``fsd infer`` / ``fsd run`` call :func:`resolve_auto` before they
start, so what ``auto`` chose is printed before anything runs and the request that
reaches the Plan step (locally or on AWS) names a concrete strategy. Resolving in the
Plan step instead would put a reference pass over the whole batch (and, for neuron
candidates, partitions) inside a Lambda invocation on the run's critical path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fsd_inference.channels import AWS_TRANSPORTS
from fsd_inference.cli import arguments
from fsd_inference.cli.common import Container, say, write_json
from fsd_inference.cloud.settings import ARCHITECTURES, DEFAULT_ARCH, CloudSettings
from fsd_inference.cost import price_regions
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.load import load_model
from fsd_inference.model.tsv import read_input
from fsd_inference.planner import OBJECTIVES, Constraints, PlanResult, Settings, plan_job
from fsd_inference.planner.candidates import MAX_LAMBDA_MB, MIN_LAMBDA_MB
from fsd_inference.planner.plan import DEFAULT_STRATEGIES
from fsd_inference.planner.report import plan_document, table_lines
from fsd_inference.predict.params import PROFILES, load_service_model
from fsd_inference.predict.sampled import DEFAULT_SAMPLE_ROWS
from fsd_inference.strategy import STRATEGIES

RANK_DRAWS = 50
DEFAULT_CHANNEL = "queue"  # a run's channel when nothing chose one


def dollars(text: str) -> float:
    """A budget: a finite amount above 0."""
    value = arguments.finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 dollars, got {text!r}")
    return value


def add_planner_options(parser: Container) -> None:
    parser.add_argument("--objective", choices=OBJECTIVES,
                        help="plan the job: rank candidate plans by predicted cost or "
                             "latency (needs --input)")
    parser.add_argument("--deadline", type=arguments.positive_seconds, metavar="S",
                        help="only plans whose predicted p95 is at most S seconds")
    parser.add_argument("--budget", type=dollars, metavar="USD",
                        help="only plans predicted to cost at most USD")
    parser.add_argument("--max-workers", type=arguments.cloud_workers, default=None,
                        help="most tasks a plan may use (default: the deployment's "
                             "MaxWorkers, 64)")
    parser.add_argument("--memory", type=arguments.bounded_int(MIN_LAMBDA_MB, MAX_LAMBDA_MB),
                        help="worker memory in MB (default: the planner tries the smallest "
                             "that fits and the steps up to one vCPU, 1,769 MB)")
    parser.add_argument("--channel", choices=sorted(AWS_TRANSPORTS), default=None,
                        help="channel between tasks that exchange (default: rank both, "
                             "queue and object)")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES,
                        default=list(DEFAULT_STRATEGIES),
                        help="strategies to consider (default data pipeline hybrid, and "
                             "neuron when none of those fits: a neuron plan's prediction "
                             "partitions and counts every block, minutes per plan)")
    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHITECTURES,
                        help=f"Lambda architecture, for prices (default {DEFAULT_ARCH})")
    parser.add_argument("--region", choices=price_regions(), default=None,
                        help="price table region (default us-east-1)")
    parser.add_argument("--draws", type=arguments.bounded_int(10, 100_000), default=RANK_DRAWS,
                        help=f"Monte Carlo draws per candidate when ranking (default "
                             f"{RANK_DRAWS}; the chosen plan gets fsd predict's 300)")
    parser.add_argument("--service", default="aws",
                        help=f"service model: {' or '.join(PROFILES)}, or a parameter file")
    parser.add_argument("--sample-rows", type=arguments.bounded_int(64, 10**9), metavar="N",
                        help="trace N sampled rows (one drawn from each of N equal ranges) "
                             "instead of the whole batch: faster "
                             "for large batches and networks, an estimate (default: every "
                             "row, exact counts)")


def run_planner(model_path: str, input_path: str, *, objective: str = "cost",
                deadline: float | None = None, budget: float | None = None,
                max_workers: int | None = None, memory: int | None = None,
                channel: str | None = None, strategies: tuple[str, ...] = DEFAULT_STRATEGIES,
                arch: str = DEFAULT_ARCH, region: str | None = None, draws: int = RANK_DRAWS,
                service: str = "aws", dtype: str = "float64", bias: float | None = None,
                partition: str = "hypergraph", seed: int = 0, rows: int | None = None,
                sample_rows: int | None = None, quiet: bool = False
                ) -> tuple[PlanResult, dict[str, Any]]:
    """Plan a job from files. ``channel`` None: rank both AWS channels; ``sample_rows``:
    trace that many rows instead of the whole batch (predict/sampled.py)."""
    network = load_model(model_path, bias=bias)
    inputs = read_input(input_path, neurons=network.neurons, dtype=dtype)
    if rows is not None:  # fsd run --rows: the job is its first rows
        inputs = inputs[:rows]
    channels = (channel,) if channel else tuple(sorted(AWS_TRANSPORTS))
    settings = Settings(channels=channels, memory_mb=memory, sample_rows=sample_rows,
                        arch=arch, region=region, dtype=dtype, partition=partition,
                        seed=seed, draws=draws)
    limit = max_workers or CloudSettings().max_workers
    if not quiet:
        traced = ("one reference pass" if sample_rows is None or sample_rows >= inputs.shape[0]
                  else f"one reference pass over {sample_rows:,} sampled rows")
        say(f"planning {network.neurons} x {network.depth}, {inputs.shape[0]:,} inputs, at most "
            f"{limit} tasks, objective {objective}: {traced}, then every candidate")
    result = plan_job(network, inputs, Constraints(objective, deadline, budget), settings,
                      load_service_model(service), limit, tuple(strategies))
    described = {"path": str(model_path), "neurons": network.neurons, "layers": network.depth,
                 "inputs": int(inputs.shape[0]), "fingerprint": network.fingerprint()}
    return result, described


def cmd_planner(args: argparse.Namespace) -> int:
    if not args.input:
        raise ConfigError("fsd plan --objective needs --input (the job's inputs)")
    started = time.perf_counter()
    result, model = run_planner(
        args.model, args.input, objective=args.objective or "cost", deadline=args.deadline,
        budget=args.budget, max_workers=args.max_workers, memory=args.memory,
        channel=args.channel, strategies=tuple(args.strategies), arch=args.arch,
        region=args.region, draws=args.draws, service=args.service, dtype=args.dtype,
        bias=args.bias, partition=args.partition, seed=args.seed,
        sample_rows=args.sample_rows, quiet=args.quiet)
    for line in table_lines(result):
        print(line)
    print(f"planned in {time.perf_counter() - started:.1f} s")
    write_json(plan_document(result, model), args.json, "the plan")
    return 0


def reject_shape_options(args: argparse.Namespace) -> None:
    """--stages, --groups, --microbatches belong to a named strategy, not to auto."""
    given = [f"--{n}" for n in ("stages", "groups", "microbatches") if getattr(args, n)]
    if given:
        raise ConfigError(f"{given[0]} does not apply to --strategy auto (the planner "
                          f"chooses the shape): name a strategy")


def resolve_auto(args: argparse.Namespace, channel: str | None,
                 memory_mb: int | None = None) -> None:
    """Replace ``--strategy auto`` by the planner's choice (cost objective) in ``args``.
    ``channel``: the one the user named (an AWS one restricts the ranking to it, a local
    one such as memory keeps it for the run); None: the planner's choice becomes
    ``args.channel``. ``memory_mb``: the workers' fixed memory (a deployed stack's
    WorkerMemory, which the Plan step checks shapes against); None lets the planner
    choose (local runs)."""
    if args.strategy != "auto":
        if getattr(args, "objective", None):
            raise ConfigError("--objective applies to --strategy auto only")
        return
    reject_shape_options(args)
    # a sample, as the cloud Plan step's auto does: tracing every row cost a whole
    # reference pass before the run (4096 x 120, blocks of 16, 10,000 rows: 41 s in all
    # for an 8 s run, the planning 32 s of it; with 1,024 rows it plans in 9 s)
    result, model = run_planner(
        str(args.model), str(args.input), objective=args.objective or OBJECTIVES[0],
        max_workers=args.workers, memory=memory_mb,
        channel=channel if channel in AWS_TRANSPORTS else None,
        dtype=args.dtype, bias=args.bias, partition=args.partition, seed=args.seed,
        rows=getattr(args, "rows", None), sample_rows=DEFAULT_SAMPLE_ROWS)
    chosen = result.chosen
    options = chosen.options()
    args.strategy, args.workers = options["strategy"], options["workers"]
    args.stages, args.groups = options["stages"], options["groups"]
    args.microbatches = options["microbatches"]
    if channel is None:
        args.channel = chosen.candidate.channel or DEFAULT_CHANNEL
    if getattr(args, "layers_per_block", None) is None and len(chosen.shape.stages) == 1:
        args.layers_per_block = options["layers_per_block"]
    sampled = (f", estimated from {DEFAULT_SAMPLE_ROWS:,} sampled rows"
               if model["inputs"] > DEFAULT_SAMPLE_ROWS else "")
    say(f"auto chose {chosen.shape.describe()} ({Path(args.model).name}; predicted on AWS "
        f"p50 {chosen.p50:.1f} s, ${chosen.cost_usd:.4f}{sampled}): {result.why}")
