"""``fsd predict``: time and cost of an ``fsd run`` on AWS, before deploying anything."""

from __future__ import annotations

import argparse
import time

from fsd_inference.channels import AWS_TRANSPORTS, ChannelConfig
from fsd_inference.cli import arguments
from fsd_inference.cli.common import (
    Subparsers,
    add_command,
    add_strategy_options,
    compute_options,
    json_options,
    model_options,
    say,
    write_json,
)
from fsd_inference.cli.predict_shape import load_job, predict_strategy
from fsd_inference.cloud.settings import ARCHITECTURES, DEFAULT_ARCH, DEFAULT_WORKER_MEMORY_MB
from fsd_inference.cost import price_regions
from fsd_inference.partition import PARTITIONERS
from fsd_inference.predict.document import build_document
from fsd_inference.predict.engine import DEFAULT_DRAWS
from fsd_inference.predict.params import PROFILES, load_service_model
from fsd_inference.predict.predictor import BUCKET, EXECUTION_ID, PredictOptions, predict

MAX_LAMBDA_MB = 10_240
MIN_LAMBDA_MB = 128


def _options(args: argparse.Namespace) -> PredictOptions:
    return PredictOptions(
        workers=args.workers, channel=args.channel, memory_mb=args.memory, arch=args.arch,
        message_limit=args.message_limit, partition=args.partition, seed=args.seed,
        dtype=args.dtype, layers_per_block=args.layers_per_block, draws=args.draws,
        execution=args.execution_id, bucket=args.bucket,
        partition_cached=not args.fresh_partition)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.plot:  # before the work, not after it
        from fsd_inference.analysis.plot import require_matplotlib

        require_matplotlib()
    if args.strategy != "neuron":
        return predict_strategy(args)
    options = _options(args)
    model = load_service_model(args.service)
    started = time.perf_counter()
    network, inputs, load_cpu, size = load_job(args)
    say(f"predicting {network.neurons} x {network.depth}, {inputs.shape[0]:,} inputs, "
        f"{options.workers} workers, {options.channel} channel, service model "
        f"{model.name!r}: counting every block with the reference kernel")
    prediction = predict(network, inputs, options, model, loaded_bytes=float(size),
                         load_cpu_s=load_cpu)
    document = build_document(prediction, args.region)
    predicted = document["predicted"]
    seconds = time.perf_counter() - started
    for line in summary_lines(document):
        print(line)
    print(f"answered in {seconds:.1f} s")
    write_json(document, args.json, "prediction")
    if args.plot:
        from fsd_inference.predict.plot import plot_timeline

        plot_timeline(prediction.simulation, args.plot,
                      f"fsd predict: {network.neurons} x {network.depth}, P = {options.workers}, "
                      f"{options.channel}, {options.memory_mb} MB ({model.name})")
        print(f"plot written to {args.plot}")
    return 0 if predicted else 1


def summary_lines(document: dict[str, object]) -> list[str]:
    """What a person reads: makespan, time split, traffic, cost."""
    predicted = document["predicted"]
    assert isinstance(predicted, dict)
    time_s, cost = predicted["time_s"], predicted["cost"]
    workers = predicted["per_worker"]
    n = len(workers)
    split = {k: sum(w[k] for w in workers) / n for k in ("compute_s", "send_s", "wait_s",
                                                          "other_s")}
    summary = document["summary"]
    assert isinstance(summary, dict)
    totals = summary["totals"]
    items = ", ".join(f"{name.replace('_', ' ')} ${item['usd']:.4f}"
                      for name, item in cost["items"].items())
    deployment = predicted["deployment"]
    return [
        f"predicted makespan: p50 {time_s['p50']:.1f} s, p95 {time_s['p95']:.1f} s "
        f"({time_s['draws']} draws; plan {predicted['phases_s']['plan']:.1f} s, gather and "
        f"cleanup {predicted['phases_s']['gather_cleanup']:.1f} s)",
        f"per worker (mean): compute {split['compute_s']:.1f} s, sending "
        f"{split['send_s']:.1f} s, waiting {split['wait_s']:.1f} s, launch and storage "
        f"{split['other_s']:.1f} s; {deployment['map']} Map, {document['blocks']} block(s) of "
        f"{deployment['layers_per_block']} layers, {deployment['memory_mb']} MB "
        f"{deployment['arch']}",
        f"traffic (exact): {int(totals['bytes_sent']):,} bytes in "
        f"{int(totals['messages_sent']):,} messages ({int(totals['frames_sent']):,} frames); "
        f"categories {document['categories']:,}",
        f"predicted cost ${cost['total_usd']:.4f} ({cost['prices']['region']} prices as of "
        f"{cost['prices']['as_of']}): {items}",
    ]


def register(sub: Subparsers) -> None:
    pre = add_command(
        sub, "predict", summary="predict the time and cost of an fsd run on AWS, before "
                                "deploying",
        description="Count exactly what `fsd run` would send (messages, bytes, API calls, "
                    "billed requests per worker and layer: the plan and the codec applied "
                    "to the reference's activations, without any transport), then model "
                    "the time on AWS (latency distributions per API call, bandwidth, "
                    "start-up, vCPU share by memory; Monte Carlo over the layer DAG) and "
                    "price it item by item. The service model is data "
                    "(aws-model.json beside prices.json, every figure sourced and dated). "
                    "These are predictions: see the README for the assumptions.",
        examples=["fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 8",
                  "fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 62 "
                  "--channel object --memory 4096 --json predicted.json",
                  "fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 20 "
                  "--plot timeline.png",
                  "fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 8 "
                  "--service emulator",
                  "fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 4 "
                  "--strategy pipeline --memory 1024",
                  "fsd predict --model n1024.fsdm --input mnist.tsv.gz --workers 8 "
                  "--strategy hybrid --groups 4 --stages 2"],
        parents=[model_options(), compute_options(),
                 json_options("the prediction (fsd infer --metrics' document plus "
                              "'predicted')")])
    pre.add_argument("--input", required=True, help="input TSV (optionally .gz)")
    pre.add_argument("--workers", type=arguments.cloud_workers, required=True,
                     help="number of workers P")
    pre.add_argument("--channel", default="queue", choices=sorted(AWS_TRANSPORTS),
                     help="communication channel (default queue)")
    pre.add_argument("--memory", type=arguments.bounded_int(MIN_LAMBDA_MB, MAX_LAMBDA_MB),
                     default=DEFAULT_WORKER_MEMORY_MB,
                     help=f"worker Lambda memory in MB (default {DEFAULT_WORKER_MEMORY_MB})")
    pre.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHITECTURES,
                     help=f"Lambda architecture, for prices (default {DEFAULT_ARCH})")
    pre.add_argument("--message-limit", type=arguments.message_limit,
                     default=ChannelConfig.max_message_bytes,
                     help="largest SQS message in bytes (default 1 MiB)")
    pre.add_argument("--partition", default="hypergraph", choices=sorted(PARTITIONERS),
                     help="partitioner (default hypergraph)")
    pre.add_argument("--seed", type=arguments.seed, default=0,
                     help="partitioner and sampling seed")
    pre.add_argument("--layers-per-block", type=arguments.positive_int,
                     help="layers per worker invocation (default: as the Plan step chooses)")
    pre.add_argument("--draws", type=arguments.bounded_int(10, 100_000), default=DEFAULT_DRAWS,
                     help=f"Monte Carlo draws (default {DEFAULT_DRAWS})")
    pre.add_argument("--service", default="aws",
                     help=f"service model: {' or '.join(PROFILES)}, or a parameter file "
                          f"(default aws)")
    pre.add_argument("--region", choices=price_regions(), default=None,
                     help="price table region (default us-east-1)")
    pre.add_argument("--execution-id", default=EXECUTION_ID,
                     help="execution id whose length the frame headers carry (default: one "
                          "shaped like fsd run's)")
    pre.add_argument("--bucket", default=BUCKET,
                     help="bucket name spill pointers carry (default: a stack-shaped name)")
    pre.add_argument("--fresh-partition", action="store_true",
                     help="count the partitioning in the Plan step (default: the bucket "
                          "already holds it)")
    add_strategy_options(pre, "neuron")
    pre.add_argument("--plot", metavar="PNG",
                     help="write a per-worker timeline PNG here (needs matplotlib: the "
                          "'plot' extra)")
    pre.set_defaults(func=cmd_predict)
