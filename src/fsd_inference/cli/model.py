"""Model commands: generate, inputs, convert, reference."""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path

from fsd_inference.cli import arguments
from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    add_kernel_options,
    categories_written,
    check_expected,
    compute_options,
    json_options,
    model_options,
    write_json,
)
from fsd_inference.exceptions import ConfigError
from fsd_inference.kernel import get_kernel
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.binary import SUFFIX, NetworkWriter, save_network
from fsd_inference.model.generate import (
    CALIBRATED,
    DEFAULT_BLOCK,
    GeneratedNetwork,
    GeneratorParams,
)
from fsd_inference.model.inputs import sample_input_path, upsample
from fsd_inference.model.load import open_model
from fsd_inference.model.reference import InferenceResult, infer
from fsd_inference.model.tsv import read_input, write_categories, write_input, write_layer_file
from fsd_inference.progress import Progress


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate layer by layer into the TSV folder and/or the bundle: one layer in memory."""
    if not args.out and not args.binary:
        raise ConfigError("fsd generate needs --out FOLDER, --binary FILE or both")
    network = GeneratedNetwork(GeneratorParams(args.neurons, args.layers, args.seed, args.block,
                                               args.bias, args.period))
    started = time.perf_counter()
    progress = Progress("generate", quiet=args.quiet)
    with ExitStack() as stack:
        bundle = (stack.enter_context(NetworkWriter(args.binary, network.neurons, network.bias))
                  if args.binary else None)
        for k, layer in enumerate(network.iter_layers(), start=1):
            if args.out:
                write_layer_file(args.out, network.neurons, k, layer)
            if bundle is not None:
                bundle.add_layer(layer)
            progress(k, network.depth)
    where = " and ".join(str(p) for p in (args.out, args.binary) if p)
    print(
        f"wrote {network.depth} layers of {network.neurons} neurons ({network.edges:,} edges, "
        f"block {network.block}, strides {network.params.cycle()}, bias {network.bias}) to "
        f"{where} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


def cmd_inputs(args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else sample_input_path()
    images = read_input(source, neurons=args.source_neurons)
    if args.rows is not None:
        if args.rows < 1:
            raise ConfigError(f"--rows must be >= 1, got {args.rows}")
        images = images[:args.rows]  # the first rows only: 65536 pixels x 10,000 is 1.5 GB
    out = upsample(images, args.neurons)
    write_input(out, args.out)
    print(f"wrote {out.shape[0]:,} inputs x {args.neurons} neurons ({out.nnz:,} nonzeros) "
          f"to {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    with open_model(args.model, bias=args.bias) as network:  # one layer in memory at a time
        save_network(network, args.out)
    print(f"wrote {args.out}: {network.neurons} neurons x {network.depth} layers, "
          f"bias {network.bias}")
    return 0


def _report(result: InferenceResult, network: NetworkSource, dtype: str, kernel: str) -> None:
    print(
        f"categories: {len(result.categories):,} of {result.inputs:,} inputs | "
        f"{network.neurons} neurons x {network.depth} layers, {dtype} | {kernel} | "
        f"{result.seconds:.2f} s | {result.edges_per_second:.3e} edges/s"
    )


def cmd_reference(args: argparse.Namespace) -> int:
    with open_model(args.model, bias=args.bias) as network:  # layers streamed, not loaded
        inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
        kernel = get_kernel(args.kernel, args.threads)
        result = infer(network, inputs, args.dtype, Progress("reference", quiet=args.quiet),
                       kernel)
    write_categories(result.categories, args.out)
    _report(result, network, args.dtype, f"{kernel.name} kernel, {kernel.threads} threads")
    categories_written(args.out)
    write_json({"model": str(args.model), "input": str(args.input), "out": str(args.out),
                "neurons": network.neurons, "layers": network.depth, "dtype": args.dtype,
                "kernel": kernel.name, "threads": kernel.threads,
                "inputs": result.inputs, "seconds": result.seconds,
                "edges_per_second": result.edges_per_second,
                "categories": result.categories.tolist()}, args.json, "result")
    return check_expected(result.categories, args.expect)


def register(sub: Subparsers) -> None:
    gen = add_command(
        sub, "generate", summary="write a RadiX-Net style network (Graph Challenge layout)",
        description="Write a RadiX-Net style network: every neuron has 32 in- and 32 "
                    "out-edges of weight 1/16 per layer, neurons relabelled by a seeded "
                    "permutation, generated and written one layer at a time: one "
                    "n<N>-l<k>.tsv file per layer (1-based row, col, value) with --out, one "
                    ".fsdm bundle with --binary, or both. The block size and stride period "
                    "are calibrated by N so that about 3% of the MNIST rows survive.",
        examples=["fsd generate --neurons 1024 --layers 120 --out nets/n1024 "
                  "--binary n1024.fsdm",
                  "fsd generate --neurons 65536 --layers 1920 --binary n65536x1920.fsdm",
                  "fsd generate --neurons 4096 --layers 8 --seed 3 --out nets/small"])
    gen.add_argument("--neurons", type=arguments.neurons, required=True,
                     help="neurons per layer N")
    gen.add_argument("--layers", type=arguments.layers, required=True,
                     help="number of layers L")
    gen.add_argument("--seed", type=arguments.seed, default=0,
                     help="relabelling seed (default 0)")
    gen.add_argument("--block", type=arguments.positive_int, default=None,
                     help="dense block size B; radix = 32 / B (default calibrated by N: "
                          + ", ".join(f"{n}: {b}" for n, (b, _) in CALIBRATED.items())
                          + f", else {DEFAULT_BLOCK})")
    gen.add_argument("--period", type=arguments.positive_int, default=None,
                     help="strides the layers cycle through, the first PERIOD of the radix "
                          "butterfly's (default calibrated by N, else all): fewer mix less")
    gen.add_argument("--bias", type=arguments.finite_float, default=None,
                     help="bias (default by N)")
    gen.add_argument("--out", help="output folder of n<N>-l<k>.tsv files")
    gen.add_argument("--binary", help=f"write the network as one {SUFFIX} bundle here")
    gen.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    gen.set_defaults(func=cmd_generate)

    inp = add_command(
        sub, "inputs", summary="upsample the 32 x 32 MNIST inputs for a larger N",
        description="Upsample square images (by default the shipped 32 x 32 MNIST sample) to "
                    "N pixels by repeating each pixel in a block, as the Graph Challenge "
                    "inputs for 4096, 16384 and 65536 neurons are made.",
        examples=["fsd inputs --neurons 4096 --out mnist-4096.tsv.gz",
                  "fsd inputs --neurons 16384 --from mine-1024.tsv --out mine-16384.tsv"])
    inp.add_argument("--neurons", type=arguments.neurons, required=True,
                     help="4096, 16384 or 65536")
    inp.add_argument("--from", dest="source", help="input TSV to upsample (default: the sample)")
    inp.add_argument("--from-neurons", dest="source_neurons", type=arguments.neurons, default=1024,
                     help="pixels per image of --from, a square (default 1024 = 32 x 32)")
    inp.add_argument("--rows", type=arguments.positive_int,
                     help="only the first ROWS inputs (default all)")
    inp.add_argument("--out", required=True, help="output TSV (.gz to compress)")
    inp.set_defaults(func=cmd_inputs)

    conv = add_command(
        sub, "convert", summary="write a network as one binary .fsdm bundle",
        description="Read a network (a folder of n<N>-l<k>.tsv files, or a bundle) and write "
                    f"it as one {SUFFIX} bundle: CSR layers in a CRC-checked zip, loaded in "
                    "well under a second.",
        examples=[f"fsd convert --model nets/n1024 --out n1024{SUFFIX}"],
        parents=[model_options()])
    conv.add_argument("--out", required=True, help=f"output bundle ({SUFFIX})")
    conv.set_defaults(func=cmd_convert)

    ref = add_command(
        sub, "reference", summary="single-process inference (the correctness oracle)",
        description="Run every layer in one process and write the categories (1-based ids "
                    "of the input rows whose final activations are not all zero). Every "
                    "distributed path is checked against it.",
        examples=["fsd reference --model n1024.fsdm --input "
                  "data/mnist-1024-first10k.tsv.gz --out cats.txt",
                  "fsd reference --model nets/n1024 --input in.tsv --out cats.txt "
                  "--expect published-cats.txt",
                  "fsd reference --model n1024.fsdm --input in.tsv --out cats.txt --json - "
                  "| jq .seconds"],
        parents=[model_options(), compute_options(), json_options("the result (timing and "
                                                                  "categories)")])
    ref.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    ref.add_argument("--out", required=True, help="categories file to write")
    add_kernel_options(ref)
    ref.add_argument("--expect", type=arguments.categories_file,
                     help="categories file to compare with (exit 3 on mismatch)")
    ref.set_defaults(func=cmd_reference)
