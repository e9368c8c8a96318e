"""A shaped prediction as a document and as the lines ``fsd predict`` prints.

Shaped like the neuron prediction's (:mod:`.document`) where the two share meaning:
``summary.totals`` (exact traffic: the stage boundaries' blocks), ``predicted`` with
``time_s``, ``per_worker`` (compute / send / wait / other per task) and ``cost`` item by
item, plus the ``shape`` and the memory check.
"""

from __future__ import annotations

from typing import Any

from fsd_inference.predict.shaped_predict import ShapedPrediction

ASSUMPTIONS = [
    "one reference pass measures the kernel on this machine; a task's compute is its "
    "rows' share of each layer's multiply-adds, scaled to a Lambda vCPU by its memory "
    "(1,769 MB = 1 vCPU, one core at most)",
    "stage boundaries carry the nonzero rows of each micro-batch, cut by the plan's code "
    "and encoded by the channel's codec (exact); decoding time is measured on a sample",
    "every task loads its shard (the weights of its layers) from S3 over one connection "
    "at network.connection_bytes_per_s; shard and activation sizes are uncompressed "
    "arrays (an upper bound)",
    "the Plan step's CPU for writing shards is not counted (the neuron prediction "
    "measures its plan; here only the files' parsing)",
]


def shaped_document(prediction: ShapedPrediction, categories: int) -> dict[str, Any]:
    sim, layout = prediction.simulation, prediction.layout
    timeline = sim.timeline
    traffic = prediction.built.traffic
    totals = {
        "messages_sent": int(sum(t.src.size for t in traffic)),
        "frames_sent": int(sum(t.frames.sum() for t in traffic)),
        "bytes_sent": int(sum(t.frame_bytes.sum() for t in traffic)),
    }
    options = prediction.options
    return {
        "strategy": prediction.shape.strategy, "shape": prediction.shape.to_dict(),
        "workers": layout.tasks, "channel": options.channel, "map": layout.map_mode,
        "blocks": int(prediction.invocations.shape[1]),
        "layers_per_block": layout.layers_per_block, "batch": layout.batch,
        "categories": categories,
        "summary": {"totals": totals, "api_calls": dict(prediction.api_calls)},
        "predicted": {
            "time_s": {"p50": sim.quantile(0.5), "p95": sim.quantile(0.95),
                       "mean": float(sim.makespan.mean()), "draws": int(sim.makespan.size)},
            "phases_s": {"plan": sim.before,
                         "blocks": float(timeline.end[:, -1].max() - sim.before),
                         "gather_cleanup": sim.after},
            "per_worker": [{
                "worker": t, "compute_s": float(timeline.compute[t].sum()),
                "send_s": float(timeline.send[t].sum()),
                "wait_s": float(timeline.wait[t].sum()),
                "other_s": float(timeline.other[t].sum()),
                "invocations_s": prediction.invocations[t].tolist()}
                for t in range(layout.tasks)],
            "cost": prediction.cost,
            "memory": {"needed_mb": prediction.memory_needed_mb,
                       "memory_mb": options.memory_mb,
                       "fits": prediction.memory_needed_mb <= options.memory_mb},
            "deployment": {"memory_mb": options.memory_mb, "arch": options.arch,
                           "message_limit": options.message_limit, "map": layout.map_mode,
                           "layers_per_block": layout.layers_per_block},
            "assumptions": ASSUMPTIONS,
        },
    }


def shaped_lines(document: dict[str, Any]) -> list[str]:
    predicted = document["predicted"]
    time_s, cost, memory = predicted["time_s"], predicted["cost"], predicted["memory"]
    workers = predicted["per_worker"]
    n = len(workers)
    split = {k: sum(w[k] for w in workers) / n for k in ("compute_s", "send_s", "wait_s",
                                                          "other_s")}
    totals = document["summary"]["totals"]
    items = ", ".join(f"{name.replace('_', ' ')} ${item['usd']:.4f}"
                      for name, item in cost["items"].items())
    return [
        f"predicted makespan: p50 {time_s['p50']:.1f} s, p95 {time_s['p95']:.1f} s "
        f"({time_s['draws']} draws; plan {predicted['phases_s']['plan']:.1f} s, gather and "
        f"cleanup {predicted['phases_s']['gather_cleanup']:.1f} s)",
        f"per task (mean): compute {split['compute_s']:.1f} s, sending {split['send_s']:.1f} "
        f"s, waiting {split['wait_s']:.1f} s, launch and storage {split['other_s']:.1f} s; "
        f"{document['map']} Map, {document['blocks']} block(s) of "
        f"{document['layers_per_block']} layers",
        f"memory: a task needs about {memory['needed_mb']:,.0f} MB of "
        f"{memory['memory_mb']:,} MB" + ("" if memory["fits"] else " (DOES NOT FIT)"),
        f"traffic (exact): {totals['bytes_sent']:,} bytes in {totals['messages_sent']:,} "
        f"messages between stages; categories {document['categories']:,}",
        f"predicted cost ${cost['total_usd']:.4f} ({cost['prices']['region']} prices as of "
        f"{cost['prices']['as_of']}): {items}",
    ]
