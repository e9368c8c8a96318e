"""The prediction as a document shaped like a run's metrics, plus a ``predicted`` section.

``summary`` and ``per_worker`` have the fields ``fsd infer --metrics`` and ``fsd run``
write, so a predicted and a measured run compare field by field: traffic (blocks,
frames, bytes sent and received per worker and layer) and the sender's API calls and
billed requests are exact; receive calls (SQS ReceiveMessage / DeleteMessageBatch, the
object channel's GET probes and LISTs) and every time are modelled. ``predicted`` holds
the makespan's quantiles, each worker's time split into computing, sending, waiting and
other work (launches, storage), the cost item by item (cost.py's items and price table),
which figures are exact and which modelled, and every service-model figure with its
source.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fsd_inference.channels.s3 import LIST_BREAK_EVEN
from fsd_inference.channels.sqs import MAX_BATCH_ENTRIES
from fsd_inference.cloud.history import state_transitions
from fsd_inference.cost import estimate_cost, load_prices
from fsd_inference.predict.neuron import cpu_factor
from fsd_inference.predict.predictor import (
    CLEANUP_MEMORY_MB,
    GATHER_MEMORY_MB,
    PLAN_MEMORY_MB,
    Prediction,
)
from fsd_inference.predict.wire import GET

SQS_BILLING = 64 * 1024
EXACT = ["bytes_sent", "messages_sent", "frames_sent", "bytes_received", "messages_received",
         "frames_received", "SQS.SendMessageBatch calls and billed requests",
         "S3.PutObject / S3.GetObject of spilled payloads (queue) and of blocks (object)",
         "state transitions", "categories"]
MODELED = ["every time (compute_s, wait_s, total_s, the makespan, Lambda GB-seconds)",
           "SQS.ReceiveMessage and SQS.DeleteMessageBatch calls and their billed requests",
           "the object channel's GET probes that find nothing and its LISTs",
           "shard GETs after the first block (container reuse)",
           "sizes of shards and checkpoints (uncompressed arrays: an upper bound)"]
ASSUMPTIONS = [
    "every worker runs on its own Lambda with the vCPU share of its memory "
    "(1,769 MB = 1 vCPU); the worker loop is single-threaded, so at most one core counts",
    "CPU seconds are measured on the machine running fsd predict and multiplied by "
    "compute.lambda_core_per_host_core",
    "API latencies are independent draws from lognormal distributions fixed by public "
    "medians and tails (see service_model); no throttling, no retries, no failures",
    "one HTTP connection's bandwidth per call (network.connection_bytes_per_s)",
    "all P workers of a block start together (inline Map, or Distributed Map child "
    "starts); the block ends when the slowest worker has written its checkpoint",
    "the Plan step finds the partition cached in the bucket unless told otherwise",
]


def _per_worker(values: np.ndarray, index: np.ndarray, workers: int) -> np.ndarray:
    return np.bincount(index, weights=values, minlength=workers)


def layer_metrics(prediction: Prediction) -> list[list[dict[str, Any]]]:
    """Per worker, per layer: LayerMetrics' fields (traffic exact, times predicted)."""
    counts, timeline = prediction.counts, prediction.simulation.timeline
    p = counts.workers
    out: list[list[dict[str, Any]]] = [[] for _ in range(p)]
    for k, traffic in enumerate(counts.layers, start=1):
        sent = np.bincount(traffic.src, minlength=p)
        received = np.bincount(traffic.dst, minlength=p)
        fields = {
            "bytes_sent": _per_worker(traffic.frame_bytes, traffic.src, p),
            "frames_sent": _per_worker(traffic.frames, traffic.src, p),
            "bytes_received": _per_worker(traffic.frame_bytes, traffic.dst, p),
            "frames_received": _per_worker(traffic.frames, traffic.dst, p),
        }
        for w in range(p):
            out[w].append({
                "layer": k,
                "compute_s": float(timeline.compute[w, k - 1]),
                "wait_s": float(timeline.wait[w, k - 1]),
                "bytes_sent": int(fields["bytes_sent"][w]),
                "messages_sent": int(sent[w]),
                "frames_sent": int(fields["frames_sent"][w]),
                "bytes_received": int(fields["bytes_received"][w]),
                "messages_received": int(received[w]),
                "frames_received": int(fields["frames_received"][w]),
                "duplicates_dropped": 0,
            })
    return out


def channel_calls(prediction: Prediction) -> tuple[list[Counter[str]], list[Counter[str]],
                                                   list[Counter[str]]]:
    """Per worker: (exact channel calls, their billed requests, modelled receive calls)."""
    counts, sim = prediction.counts, prediction.simulation
    p = counts.workers
    exact = [Counter[str]() for _ in range(p)]
    billed = [Counter[str]() for _ in range(p)]
    modeled = [Counter[str]() for _ in range(p)]
    received_bytes = np.zeros((p, counts.depth))
    inbox = np.zeros((p, counts.depth))
    for k, (traffic, wire) in enumerate(zip(counts.layers, prediction.wires, strict=True)):
        for api, calls in wire.send_calls.items():
            for w, n in enumerate(_per_worker(calls, traffic.src, p)):
                exact[w][api] += round(n)
        for api, calls in wire.receive_calls.items():
            for w, n in enumerate(_per_worker(calls, traffic.dst, p)):
                exact[w][api] += round(n)
        for api, calls in wire.billed.items():
            for w, n in enumerate(_per_worker(calls, traffic.src, p)):
                billed[w][api] += round(n)
        if wire.down_bytes is not None:
            received_bytes[:, k] = _per_worker(wire.down_bytes, traffic.dst, p)
        inbox[:, k] = np.bincount(traffic.dst, minlength=p)
    calls, empty = sim.calls, sim.empty
    # the queue channel deletes in batches of ten and the rest when a block ends
    deletes = sum(np.ceil(inbox[:, first:last + 1].sum(axis=1) / MAX_BATCH_ENTRIES)
                  for first, last in prediction.deployment.blocks(counts.depth))
    for w in range(p):
        if prediction.options.channel == "queue":
            receives = float((calls[w] + empty[w]).sum())
            modeled[w]["SQS.ReceiveMessage"] = round(receives)
            modeled[w]["SQS.DeleteMessageBatch"] = round(float(deletes[w]))
            chunks = np.maximum(calls[w], np.ceil(received_bytes[w] / SQS_BILLING)) + empty[w]
            billed[w]["SQS.ReceiveMessage"] += round(float(chunks.sum()))
            billed[w]["SQS.DeleteMessageBatch"] += modeled[w]["SQS.DeleteMessageBatch"]
        else:
            listing = inbox[w] > LIST_BREAK_EVEN
            probes = np.where(listing, 0.0, empty[w] * np.maximum(inbox[w] / 2, 1.0))
            modeled[w][GET] = round(float(probes.sum()))
            modeled[w]["S3.ListObjectsV2"] = round(float(np.where(listing, empty[w] + calls[w],
                                                                      0.0).sum()))
    return exact, billed, modeled


def storage_calls(prediction: Prediction) -> Counter[str]:
    """One worker's calls around the exchange, all blocks (fsd run's worker step)."""
    blocks = len(prediction.deployment.blocks(prediction.counts.depth))
    miss = prediction.model.value("lambda.shard_cache_miss")
    calls: Counter[str] = Counter()
    calls[GET] = round(2 + (blocks - 1) * (1 + miss))  # shard + input; then ckpt + shard
    calls["S3.PutObject"] = 2 * blocks  # checkpoint + metrics
    calls["S3.HeadObject"] = blocks  # the manifest, checking the run was not cancelled
    if prediction.options.channel == "queue":
        calls["SQS.GetQueueUrl"] = blocks
    return calls


def outside_workers(prediction: Prediction) -> Counter[str]:
    """The Plan, Gather and Cleanup steps' calls (modelled from their code paths)."""
    p = prediction.counts.workers
    blocks = len(prediction.deployment.blocks(prediction.counts.depth))
    calls: Counter[str] = Counter({"S3.GetObject": 2 + p + p * blocks + 1,
                                   "S3.PutObject": 2 * p + 2 + 2,
                                   "S3.HeadObject": 2, "S3.ListObjectsV2": 2})
    if prediction.options.channel == "queue":
        calls["SQS.CreateQueue"] = p
        calls["SQS.DeleteQueue"] = p
    return calls


def invocations(prediction: Prediction) -> np.ndarray:
    """(P, B) mean billed seconds of every worker invocation."""
    sim = prediction.simulation
    timeline = sim.timeline
    model = prediction.model
    overhead = (model.latency("stepfunctions.block_overhead").mean
                + model.latency("stepfunctions.distributed_child"
                                if prediction.deployment.map_mode == "distributed"
                                else "stepfunctions.lambda_task").mean)
    blocks = prediction.deployment.blocks(prediction.counts.depth)
    out = np.zeros((prediction.counts.workers, len(blocks)))
    for b, (first, last) in enumerate(blocks):
        gate = sim.before if b == 0 else float(sim.gate[first])
        out[:, b] = np.maximum(timeline.end[:, last] - gate - overhead, 0.0)
    return out


def build_document(prediction: Prediction, region: str | None = None) -> dict[str, Any]:
    """The whole document (see the module docstring)."""
    counts, sim, options = prediction.counts, prediction.simulation, prediction.options
    deployment = prediction.deployment
    p = counts.workers
    layers = layer_metrics(prediction)
    exact, billed, modeled = channel_calls(prediction)
    storage = storage_calls(prediction)
    billed_seconds = invocations(prediction)
    timeline = sim.timeline
    per_worker = []
    summary_calls: Counter[str] = Counter()
    summary_billed: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for w in range(p):
        calls = exact[w] + modeled[w] + storage
        worker_billed = Counter(billed[w])
        for api in ("SQS.GetQueueUrl",):
            if calls.get(api):
                worker_billed[api] += calls[api]
        worker_totals = Counter[str]()
        for layer in layers[w]:
            worker_totals.update({k: v for k, v in layer.items() if k != "layer"})
        totals.update(worker_totals)
        summary_calls.update(calls)
        summary_billed.update(worker_billed)
        per_worker.append({
            "worker": w, "load_s": 0.0, "total_s": float(billed_seconds[w].sum()),
            "totals": dict(worker_totals), "api_calls": dict(calls), "api_bytes": {},
            "billed_requests": dict(worker_billed), "layers": layers[w]})
    blocks = len(deployment.blocks(counts.depth))
    lambda_section = {
        "plan": {"invocations": 1, "seconds": sim.before, "memory_mb": PLAN_MEMORY_MB},
        "worker": {"invocations": p * blocks, "seconds": float(billed_seconds.sum()),
                   "memory_mb": options.memory_mb},
        "gather": {"invocations": 1, "seconds": sim.after / 2, "memory_mb": GATHER_MEMORY_MB},
        "cleanup": {"invocations": 1, "seconds": sim.after / 2,
                    "memory_mb": CLEANUP_MEMORY_MB},
    }
    document: dict[str, Any] = {
        "execution": options.execution, "workers": p, "channel": options.channel,
        "map": deployment.map_mode, "blocks": blocks,
        "layers_per_block": deployment.layers_per_block, "neurons": counts.neurons,
        "depth": counts.depth, "batch": counts.batch, "categories": counts.categories,
        "plan": {"neurons_sent_total": prediction.plan.total_neurons,
                 "neurons_sent_per_layer": prediction.plan.neurons_per_layer.tolist(),
                 "neuron_copies_total": int(prediction.plan.copies.sum())},
        "lambda": lambda_section,
        "api_calls_outside_workers": dict(outside_workers(prediction)),
        "summary": {"totals": dict(totals), "api_calls": dict(summary_calls),
                    "billed_requests": dict(summary_billed)},
        "per_worker": per_worker,
    }
    transitions = state_transitions(p, blocks)
    cost = estimate_cost(document, options.memory_mb, options.arch, transitions,
                         load_prices(region))
    document["predicted"] = {
        "time_s": {"p50": sim.quantile(0.5), "p95": sim.quantile(0.95),
                   "mean": float(sim.makespan.mean()), "draws": int(sim.makespan.size)},
        "phases_s": {"plan": sim.before, "blocks": float(
            timeline.end[:, -1].max() - sim.before), "gather_cleanup": sim.after},
        "per_worker": [{
            "worker": w, "compute_s": float(timeline.compute[w].sum()),
            "send_s": float(timeline.send[w].sum()), "wait_s": float(timeline.wait[w].sum()),
            "other_s": float(timeline.other[w].sum()),
            "invocations_s": billed_seconds[w].tolist(),
            "channel_api_calls": {"exact": dict(exact[w]), "modeled": dict(modeled[w])},
        } for w in range(p)],
        "cost": cost,
        "deployment": {"memory_mb": options.memory_mb, "arch": options.arch,
                       "message_limit": options.message_limit, "map": deployment.map_mode,
                       "layers_per_block": deployment.layers_per_block,
                       "partition": options.partition, "dtype": options.dtype,
                       "cpu_factor": cpu_factor(prediction.model, options.memory_mb)},
        "measured_here": {
            "kernel_cpu_s": float(counts.kernel_s.sum()),
            "kernel_multiply_adds": float(counts.kernel_flops.sum()),
            "encode_cpu_s": float(sum(t.encode_s.sum() for t in counts.layers)),
            "assemble_s_per_nonzero": counts.assemble_s_per_nnz,
            "decode_s": {"per_block": counts.decode_fit[0], "per_byte": counts.decode_fit[1]},
        },
        "exact": EXACT, "modeled": MODELED, "assumptions": ASSUMPTIONS,
        "service_model": prediction.model.describe(),
        "predict_seconds": prediction.seconds,
    }
    return document
