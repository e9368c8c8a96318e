"""``fsd predict --strategy data|pipeline|hybrid``: the shapes without neuron exchange.

Their prediction needs no partition and no per-layer counting: one reference pass
(predict/trace.py) and the shaped builder (predict/shaped.py). ``fsd predict`` calls
:func:`predict_strategy` for every strategy but ``neuron``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import scipy.sparse as sp

from fsd_inference.cli.common import say, write_json
from fsd_inference.exceptions import ConfigError
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import read_input
from fsd_inference.predict.params import load_service_model
from fsd_inference.predict.shaped_document import shaped_document, shaped_lines
from fsd_inference.predict.shaped_predict import (
    ShapeOptions,
    predict_shape,
    shape_memory_mb,
    wanted_blocks,
)
from fsd_inference.predict.trace import trace_run
from fsd_inference.strategy import compile_shape


def load_job(args: argparse.Namespace) -> tuple[Network, sp.csr_matrix, float, float]:
    """The model and inputs, this machine's CPU seconds to parse them and their files'
    size (the Plan step downloads and parses the same)."""
    cpu = time.process_time()
    network = load_model(args.model, bias=args.bias)
    inputs = read_input(args.input, neurons=network.neurons, dtype=args.dtype)
    load_cpu = time.process_time() - cpu
    size = sum(Path(p).stat().st_size for p in (args.model, args.input) if Path(p).is_file())
    return network, inputs, load_cpu, float(size)


def predict_strategy(args: argparse.Namespace) -> int:
    if args.plot:
        raise ConfigError("--plot draws the neuron strategy's per-layer timeline; leave it "
                          "out with --strategy " + args.strategy)
    model = load_service_model(args.service)
    started = time.perf_counter()
    network, inputs, load_cpu, size = load_job(args)
    shape = compile_shape(args.strategy, args.workers, network.depth, int(inputs.shape[0]),
                          stages=args.stages, groups=args.groups,
                          microbatches=args.microbatches)
    if any(stage.parts != 1 for stage in shape.stages):
        raise ConfigError(f"{shape.describe()}: neuron parts inside a stage are predicted "
                          f"only by --strategy neuron; give --workers = --groups x --stages")
    options = ShapeOptions(channel=args.channel, memory_mb=args.memory, arch=args.arch,
                           message_limit=args.message_limit,
                           layers_per_block=args.layers_per_block, draws=args.draws,
                           seed=args.seed, execution=args.execution_id, bucket=args.bucket,
                           region=args.region)
    say(f"predicting {network.neurons} x {network.depth}, {inputs.shape[0]:,} inputs, "
        f"{shape.describe()}, service model {model.name!r}: one reference pass")
    trace = trace_run(network, inputs, args.dtype, wanted_blocks(shape, int(inputs.shape[0])),
                      args.execution_id, 1 << 40)
    needed = shape_memory_mb(trace, shape)
    if needed > args.memory:
        raise ConfigError(f"{shape.describe()}: a task needs about {needed:,.0f} MB but the "
                          f"function has {args.memory:,} MB (--memory): it does not fit; use "
                          f"more stages, or more memory (up to 10,240 MB)")
    prediction = predict_shape(trace, shape, options, model, loaded_bytes=size,
                               load_cpu_s=load_cpu)
    document = shaped_document(prediction, trace.categories)
    print(f"shape: {shape.describe()}")
    for line in shaped_lines(document):
        print(line)
    print(f"answered in {time.perf_counter() - started:.1f} s")
    write_json(document, args.json, "prediction")
    return 0
