"""The ``fsd`` command line. Each sub-command is a thin adapter over the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fsd_inference import __version__
from fsd_inference.channels import AWS_TRANSPORTS, TRANSPORTS, ChannelConfig
from fsd_inference.config import AwsConfig, cache_dir
from fsd_inference.constants import DEFAULT_DTYPE, DTYPES
from fsd_inference.exceptions import FsdError
from fsd_inference.local import aws_for_run
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.generate import DEFAULT_BLOCK, GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network
from fsd_inference.model.reference import InferenceResult, infer
from fsd_inference.model.tsv import (
    atomic_path,
    read_categories,
    read_input,
    write_categories,
    write_input,
    write_network_dir,
)
from fsd_inference.partition import PARTITIONERS
from fsd_inference.partition.cache import ownership
from fsd_inference.partition.plan import build_plan
from fsd_inference.progress import Progress
from fsd_inference.runner import InferOptions, run_inference

DEMO_NEURONS = 1024
DEMO_LAYERS = 120
DEMO_SEED = 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace) -> int:
    params = GeneratorParams(args.neurons, args.layers, args.seed, args.block, args.bias)
    started = time.perf_counter()
    network = generate(params)
    paths = write_network_dir(network, args.out)
    if args.binary:
        save_network(network, args.binary)
    print(
        f"wrote {len(paths)} layers of {network.neurons} neurons ({network.edges:,} edges, "
        f"bias {network.bias}) to {args.out} in {time.perf_counter() - started:.1f} s"
    )
    return 0


def cmd_inputs(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else sample_input_path()
    images = read_input(source, neurons=args.source_neurons)
    out = upsample(images, args.neurons)
    write_input(out, args.out)
    print(f"wrote {out.shape[0]:,} inputs x {args.neurons} neurons ({out.nnz:,} nonzeros) "
          f"to {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    network = load_model(args.model, bias=args.bias)
    save_network(network, args.out)
    print(f"wrote {args.out}: {network.neurons} neurons x {network.depth} layers, "
          f"bias {network.bias}")
    return 0


def _report(result: InferenceResult, network: Network, dtype: str) -> None:
    print(
        f"categories: {len(result.categories):,} of {result.inputs:,} inputs | "
        f"{network.neurons} neurons x {network.depth} layers, {dtype} | "
        f"{result.seconds:.2f} s | {result.edges_per_second:.3e} edges/s"
    )


def _check_expected(categories: np.ndarray, expected_path: str | None) -> int:
    if not expected_path:
        return 0
    expected = read_categories(expected_path)
    if np.array_equal(categories, expected):
        print(f"match: identical to {expected_path}")
        return 0
    missing = np.setdiff1d(expected, categories)
    extra = np.setdiff1d(categories, expected)
    print(f"MISMATCH against {expected_path}: {missing.size} missing, {extra.size} extra "
          f"(first: {[*missing[:5], *extra[:5]]})")
    return 3


def cmd_reference(args: argparse.Namespace) -> int:
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    result = infer(network, inputs, args.dtype, Progress("reference", quiet=args.quiet))
    write_categories(result.categories, args.out)
    _report(result, network, args.dtype)
    return _check_expected(result.categories, args.expect)


def _write_metrics(document: dict[str, object], path: str | None) -> None:
    if path:
        with atomic_path(Path(path)) as temporary:
            temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print(f"metrics written to {path}")


def cmd_infer(args: argparse.Namespace) -> int:
    with aws_for_run(args.channel in AWS_TRANSPORTS, _say) as aws:
        return _infer(args, aws)


def _infer(args: argparse.Namespace, aws: AwsConfig) -> int:
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    options = InferOptions(
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype,
        config=ChannelConfig(max_message_bytes=args.message_limit,
                             receive_timeout_s=args.timeout, aws=aws),
    )
    _say(f"{args.workers} workers over the {args.channel} channel, {args.partition} partition")
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
    _write_metrics(result.metrics_document(), args.metrics)
    return _check_expected(result.categories, args.expect)


def _spread(values: np.ndarray) -> dict[str, float]:
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def cmd_plan(args: argparse.Namespace) -> int:
    network = load_model(args.model, bias=args.bias)
    owned = ownership(network, args.partition, args.workers, args.seed)
    plan, _ = build_plan(network, owned.owners, args.workers)
    sent, copies = plan.neurons_per_layer, plan.copies.sum(axis=(1, 2))
    work = np.array([np.bincount(owned.owners[k], weights=np.diff(w.tocsc().indptr),
                                 minlength=args.workers)
                     for k, w in enumerate(network.layers, start=1)])  # (L, P) nonzeros
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
    if args.json:
        document = {
            "model": {"path": str(args.model), "neurons": network.neurons,
                      "layers": network.depth, "fingerprint": network.fingerprint()},
            "partition": {"name": args.partition, "workers": args.workers, "seed": args.seed,
                          "seconds": owned.seconds, "cached": owned.cached,
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
        with atomic_path(Path(args.json)) as temporary:
            temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print(f"plan summary written to {args.json}")
    return 0


def demo_model() -> Path:
    """The demo network (1024 x 120, seed 0), generated once and cached as a bundle."""
    path = cache_dir() / f"radixnet-{DEMO_NEURONS}x{DEMO_LAYERS}-seed{DEMO_SEED}{SUFFIX}"
    if not path.is_file():
        _say(f"generating the demo network {DEMO_NEURONS} x {DEMO_LAYERS} into {path}")
        save_network(generate(GeneratorParams(DEMO_NEURONS, DEMO_LAYERS, DEMO_SEED)), path)
    return path


def cmd_run(args: argparse.Namespace) -> int:
    """The serverless application end to end: embedded local AWS, or --stack on AWS."""
    from fsd_inference.app import RunOptions, run_and_report
    from fsd_inference.cloud.stack import stack_outputs

    aws = AwsConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None
    if args.stack:  # a wrong stack name fails before the demo network is generated
        stack_outputs(args.stack, aws or AwsConfig())
    options = RunOptions(
        model=Path(args.model) if args.model else demo_model(),
        input=Path(args.input) if args.input else sample_input_path(),
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype, layers_per_block=args.layers_per_block,
        message_limit=args.message_limit, receive_timeout_s=args.timeout, rows=args.rows,
        bias=args.bias)
    out = Path(args.out) if args.out else cache_dir() / "categories.txt"
    return run_and_report(options, out, Path(args.metrics) if args.metrics else None,
                          stack=args.stack, aws=aws, quiet=args.quiet)


# ----------------------------------------------------------------------------- parser


def _add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="network folder (n<N>-l<k>.tsv files) or .fsdm bundle")
    parser.add_argument("--bias", type=float, default=None,
                        help="bias added to nonzeros (default by N: 1024 -0.3, 4096 -0.35, "
                             "16384 -0.4, 65536 -0.45)")


def _add_compute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help=f"arithmetic and wire dtype (default {DEFAULT_DTYPE})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsd", description="Serverless distributed inference of sparse DNNs."
    )
    parser.add_argument("--version", action="version", version=f"fsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a RadiX-Net style network (Graph Challenge "
                                          "layout)")
    gen.add_argument("--neurons", type=int, required=True, help="neurons per layer N")
    gen.add_argument("--layers", type=int, required=True, help="number of layers L")
    gen.add_argument("--seed", type=int, default=0, help="relabelling seed (default 0)")
    gen.add_argument("--block", type=int, default=DEFAULT_BLOCK,
                     help=f"dense block size B; radix = 32 / B (default {DEFAULT_BLOCK})")
    gen.add_argument("--bias", type=float, default=None, help="bias (default by N)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--binary", help="also write the network as one .fsdm bundle here")
    gen.set_defaults(func=cmd_generate)

    inp = sub.add_parser("inputs", help="upsample the 32 x 32 MNIST inputs for a larger N")
    inp.add_argument("--neurons", type=int, required=True, help="4096, 16384 or 65536")
    inp.add_argument("--from", dest="source", help="input TSV to upsample (default: the sample)")
    inp.add_argument("--from-neurons", dest="source_neurons", type=int, default=1024,
                     help="pixels per image of --from, a square (default 1024 = 32 x 32)")
    inp.add_argument("--out", required=True, help="output TSV (.gz to compress)")
    inp.set_defaults(func=cmd_inputs)

    conv = sub.add_parser("convert", help="write a network as one binary .fsdm bundle")
    _add_model_options(conv)
    conv.add_argument("--out", required=True, help=f"output bundle ({SUFFIX})")
    conv.set_defaults(func=cmd_convert)

    ref = sub.add_parser("reference", help="single-process inference (the correctness oracle)")
    _add_model_options(ref)
    ref.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    ref.add_argument("--out", required=True, help="categories file to write")
    ref.add_argument("--expect", help="categories file to compare with (exit 3 on mismatch)")
    _add_compute_options(ref)
    ref.set_defaults(func=cmd_reference)

    inf = sub.add_parser("infer", help="distributed inference over P local workers")
    _add_model_options(inf)
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
    _add_compute_options(inf)
    inf.set_defaults(func=cmd_infer)

    pln = sub.add_parser("plan", help="partition a network and report its communication plan")
    _add_model_options(pln)
    pln.add_argument("--workers", type=int, required=True, help="number of workers P")
    pln.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    pln.add_argument("--seed", type=int, default=0, help="partitioner seed (default 0)")
    pln.add_argument("--json", help="also write the summary as JSON here")
    pln.set_defaults(func=cmd_plan)

    run = sub.add_parser(
        "run", help="the main job: the serverless application end to end (state machine, "
                    "Lambda workers, SQS / S3) on an embedded local AWS, or on a deployed "
                    "stack with --stack")
    _add_model_options(run, required=False)
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
    run.add_argument("--out", help="categories file (default .cache/fsd-inference/"
                                   "categories.txt)")
    run.add_argument("--metrics", help="metrics JSON file to write")
    run.add_argument("--stack", help="run on this deployed stack (sam deploy) instead of the "
                                     "embedded local AWS")
    run.add_argument("--endpoint-url", help="with --stack: the AWS endpoint (default: "
                                            "AWS_ENDPOINT_URL or AWS itself)")
    _add_compute_options(run)
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FsdError as exc:
        print(f"fsd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable or unwritable paths, full disks: the user's to fix
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fsd {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fsd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
