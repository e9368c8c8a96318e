"""Model commands: generate, inputs, convert, reference."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    categories_written,
    check_expected,
    compute_options,
    json_options,
    model_options,
    write_json,
)
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


def _report(result: InferenceResult, network: Network, dtype: str) -> None:
    print(
        f"categories: {len(result.categories):,} of {result.inputs:,} inputs | "
        f"{network.neurons} neurons x {network.depth} layers, {dtype} | "
        f"{result.seconds:.2f} s | {result.edges_per_second:.3e} edges/s"
    )


def cmd_reference(args: argparse.Namespace) -> int:
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    result = infer(network, inputs, args.dtype, Progress("reference", quiet=args.quiet))
    write_categories(result.categories, args.out)
    _report(result, network, args.dtype)
    categories_written(args.out)
    write_json({"model": str(args.model), "input": str(args.input), "out": str(args.out),
                "neurons": network.neurons, "layers": network.depth, "dtype": args.dtype,
                "inputs": result.inputs, "seconds": result.seconds,
                "edges_per_second": result.edges_per_second,
                "categories": result.categories.tolist()}, args.json, "result")
    return check_expected(result.categories, args.expect)


def register(sub: Subparsers) -> None:
    gen = add_command(
        sub, "generate", summary="write a RadiX-Net style network (Graph Challenge layout)",
        description="Write a RadiX-Net style network: every neuron has 32 in- and 32 "
                    "out-edges of weight 1/16 per layer, neurons relabelled by a seeded "
                    "permutation. One n<N>-l<k>.tsv file per layer (1-based row, col, "
                    "value), and optionally the same network as one .fsdm bundle.",
        examples=["fsd generate --neurons 1024 --layers 120 --out nets/n1024 "
                  "--binary n1024.fsdm",
                  "fsd generate --neurons 4096 --layers 8 --seed 3 --out nets/small"])
    gen.add_argument("--neurons", type=int, required=True, help="neurons per layer N")
    gen.add_argument("--layers", type=int, required=True, help="number of layers L")
    gen.add_argument("--seed", type=int, default=0, help="relabelling seed (default 0)")
    gen.add_argument("--block", type=int, default=DEFAULT_BLOCK,
                     help=f"dense block size B; radix = 32 / B (default {DEFAULT_BLOCK})")
    gen.add_argument("--bias", type=float, default=None, help="bias (default by N)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--binary", help="also write the network as one .fsdm bundle here")
    gen.set_defaults(func=cmd_generate)

    inp = add_command(
        sub, "inputs", summary="upsample the 32 x 32 MNIST inputs for a larger N",
        description="Upsample square images (by default the shipped 32 x 32 MNIST sample) to "
                    "N pixels by repeating each pixel in a block, as the Graph Challenge "
                    "inputs for 4096, 16384 and 65536 neurons are made.",
        examples=["fsd inputs --neurons 4096 --out mnist-4096.tsv.gz",
                  "fsd inputs --neurons 16384 --from mine-1024.tsv --out mine-16384.tsv"])
    inp.add_argument("--neurons", type=int, required=True, help="4096, 16384 or 65536")
    inp.add_argument("--from", dest="source", help="input TSV to upsample (default: the sample)")
    inp.add_argument("--from-neurons", dest="source_neurons", type=int, default=1024,
                     help="pixels per image of --from, a square (default 1024 = 32 x 32)")
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
    ref.add_argument("--expect", help="categories file to compare with (exit 3 on mismatch)")
    ref.set_defaults(func=cmd_reference)
