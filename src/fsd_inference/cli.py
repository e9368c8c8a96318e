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
from fsd_inference.channels import TRANSPORTS, ChannelConfig
from fsd_inference.config import cache_dir
from fsd_inference.constants import DEFAULT_DTYPE, DTYPES
from fsd_inference.exceptions import FsdError
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
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    options = InferOptions(
        workers=args.workers, channel=args.channel, partition=args.partition, seed=args.seed,
        dtype=args.dtype,
        config=ChannelConfig(max_message_bytes=args.message_limit,
                             receive_timeout_s=args.timeout),
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
        f"traffic: {result.plan.total_neurons:,} neuron copies planned, "
        f"{int(totals['bytes_sent']):,} bytes in {int(totals['messages_sent']):,} messages "
        f"({int(totals['frames_sent']):,} frames)"
    )
    print("phases: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in result.phases.items()))
    _write_metrics(result.metrics_document(), args.metrics)
    return _check_expected(result.categories, args.expect)


def demo_model() -> Path:
    """The demo network (1024 x 120, seed 0), generated once and cached as a bundle."""
    path = cache_dir() / f"radixnet-{DEMO_NEURONS}x{DEMO_LAYERS}-seed{DEMO_SEED}{SUFFIX}"
    if not path.is_file():
        _say(f"generating the demo network {DEMO_NEURONS} x {DEMO_LAYERS} into {path}")
        save_network(generate(GeneratorParams(DEMO_NEURONS, DEMO_LAYERS, DEMO_SEED)), path)
    return path


def cmd_run(args: argparse.Namespace) -> int:
    model = Path(args.model) if args.model else demo_model()
    source = Path(args.input) if args.input else sample_input_path()
    out = Path(args.out) if args.out else cache_dir() / "categories.txt"
    network = load_model(model, bias=args.bias)
    inputs = read_input(source, neurons=network.neurons, dtype=args.dtype)
    _say(f"model {model}, input {source} ({inputs.shape[0]:,} rows)")
    result = infer(network, inputs, args.dtype, Progress("reference", quiet=args.quiet))
    write_categories(result.categories, out)
    _report(result, network, args.dtype)
    print(f"categories written to {out}")
    return 0


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

    run = sub.add_parser("run", help="the main job: the demo end to end (defaults: generated "
                                     "1024 x 120 network, the 10,000 MNIST sample inputs)")
    _add_model_options(run, required=False)
    run.add_argument("--input", help="input TSV (default: the shipped MNIST sample)")
    run.add_argument("--out", help="categories file (default: .cache/fsd-inference/...)")
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
    except KeyboardInterrupt:
        print(f"fsd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
