"""Model commands: generate, inputs, convert, reference."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fsd_inference.cli.common import (
    add_compute_options,
    add_kernel_options,
    add_model_options,
    check_expected,
)
from fsd_inference.kernel import get_kernel
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.generate import DEFAULT_BLOCK, GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network
from fsd_inference.model.reference import InferenceResult, infer
from fsd_inference.model.tsv import read_input, write_categories, write_input, write_network_dir
from fsd_inference.progress import Progress


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


def _report(result: InferenceResult, network: Network, dtype: str, kernel: str) -> None:
    print(
        f"categories: {len(result.categories):,} of {result.inputs:,} inputs | "
        f"{network.neurons} neurons x {network.depth} layers, {dtype} | {kernel} | "
        f"{result.seconds:.2f} s | {result.edges_per_second:.3e} edges/s"
    )


def cmd_reference(args: argparse.Namespace) -> int:
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    kernel = get_kernel(args.kernel, args.threads)
    result = infer(network, inputs, args.dtype, Progress("reference", quiet=args.quiet), kernel)
    write_categories(result.categories, args.out)
    _report(result, network, args.dtype, f"{kernel.name} kernel, {kernel.threads} threads")
    return check_expected(result.categories, args.expect)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    add_model_options(conv)
    conv.add_argument("--out", required=True, help=f"output bundle ({SUFFIX})")
    conv.set_defaults(func=cmd_convert)

    ref = sub.add_parser("reference", help="single-process inference (the correctness oracle)")
    add_model_options(ref)
    ref.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    ref.add_argument("--out", required=True, help="categories file to write")
    ref.add_argument("--expect", help="categories file to compare with (exit 3 on mismatch)")
    add_compute_options(ref)
    add_kernel_options(ref)
    ref.set_defaults(func=cmd_reference)
