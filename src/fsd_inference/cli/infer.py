"""``fsd infer``: distributed inference over P local worker processes."""

from __future__ import annotations

import argparse
import time

from fsd_inference.channels import AWS_TRANSPORTS, TRANSPORTS, ChannelConfig
from fsd_inference.cli.common import (
    add_compute_options,
    add_kernel_options,
    add_model_options,
    check_expected,
    say,
    write_json,
)
from fsd_inference.config import AwsConfig
from fsd_inference.constants import DEFAULT_PARTS, MAX_PARTS
from fsd_inference.local import aws_for_run
from fsd_inference.model.load import load_model
from fsd_inference.model.tsv import read_input, write_categories
from fsd_inference.partition import PARTITIONERS
from fsd_inference.progress import Progress
from fsd_inference.runner import InferOptions, run_inference


def cmd_infer(args: argparse.Namespace) -> int:
    with aws_for_run(args.channel in AWS_TRANSPORTS, say) as aws:
        return _infer(args, aws)


def _infer(args: argparse.Namespace, aws: AwsConfig) -> int:
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    options = InferOptions(
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype,
        config=ChannelConfig(max_message_bytes=args.message_limit,
                             receive_timeout_s=args.timeout, aws=aws),
        parts=args.parts, kernel=args.kernel, threads=args.threads,
    )
    say(f"{args.workers} workers over the {args.channel} channel, {args.partition} partition")
    started = time.perf_counter()
    result = run_inference(network, inputs, options, Progress("layers", quiet=args.quiet))
    seconds = time.perf_counter() - started
    write_categories(result.categories, args.out)
    totals = result.metrics_document()["summary"]["totals"]
    print(
        f"categories: {len(result.categories):,} of {inputs.shape[0]:,} inputs | "
        f"{network.neurons} neurons x {network.depth} layers, {args.dtype} | {seconds:.2f} s | "
        f"{inputs.shape[0] * network.edges / seconds:.3e} edges/s"
    )
    print(
        f"traffic: {int(result.plan.copies.sum()):,} neuron copies needed, "
        f"{result.plan.total_neurons:,} sent (twins once), "
        f"{int(totals['bytes_sent']):,} bytes in {int(totals['messages_sent']):,} messages "
        f"({int(totals['frames_sent']):,} frames)"
    )
    print("phases: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in result.phases.items()))
    write_json(result.metrics_document(), args.metrics)
    return check_expected(result.categories, args.expect)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inf = sub.add_parser("infer", help="distributed inference over P local workers")
    add_model_options(inf)
    inf.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    inf.add_argument("--workers", type=int, required=True, help="number of workers P")
    inf.add_argument("--channel", default="memory", choices=sorted(TRANSPORTS),
                     help="communication channel (default memory)")
    inf.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    inf.add_argument("--seed", type=int, default=0, help="partitioner seed (default 0)")
    inf.add_argument("--message-limit", type=int, default=ChannelConfig.max_message_bytes,
                     help="largest message in bytes (default 1 MiB; SQS also 256 KiB)")
    inf.add_argument("--timeout", type=float, default=ChannelConfig.receive_timeout_s,
                     help="longest wait for one layer's messages, seconds")
    inf.add_argument("--out", required=True, help="categories file to write")
    inf.add_argument("--metrics", help="metrics JSON file to write")
    inf.add_argument("--expect", help="categories file to compare with (exit 3 on mismatch)")
    inf.add_argument("--parts", type=int, default=DEFAULT_PARTS,
                     help=f"row parts per layer: part c is sent while part c + 1 is computed "
                          f"(1..{MAX_PARTS}, default {DEFAULT_PARTS})")
    add_compute_options(inf)
    add_kernel_options(inf, workers=True)
    inf.set_defaults(func=cmd_infer)
