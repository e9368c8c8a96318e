"""Per-worker, per-layer measurements, and their JSON form.

Times are durations (``*_s``, seconds of ``time.perf_counter``) except ``started_at``,
a wall-clock Unix time so that layers of different processes and Lambda functions can
be placed on one timeline (``fsd report --plot``): on AWS the functions' clocks are
NTP-synchronised to well under the tens of milliseconds a layer takes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerMetrics:
    layer: int
    compute_s: float = 0.0  # slicing, encoding, assembling, multiplying, activating
    wait_s: float = 0.0  # blocked in receive
    send_s: float = 0.0  # in Channel.send (encode + hand to the transport); within compute_s
    started_at: float = 0.0  # Unix time of this worker's first send or receive of the layer
    bytes_sent: int = 0  # frame bytes handed to the channel
    messages_sent: int = 0  # blocks (one per target with a non-empty plan set)
    frames_sent: int = 0
    bytes_received: int = 0
    messages_received: int = 0
    frames_received: int = 0
    duplicates_dropped: int = 0


_NOT_SUMMED = frozenset({"layer", "started_at"})


@dataclass
class WorkerMetrics:
    worker: int
    layers: dict[int, LayerMetrics] = field(default_factory=dict)
    api_calls: Counter[str] = field(default_factory=Counter)  # "SQS.SendMessageBatch": n
    api_bytes: Counter[str] = field(default_factory=Counter)
    billed_requests: Counter[str] = field(default_factory=Counter)  # SQS: per 64 KiB
    bytes_to: Counter[int] = field(default_factory=Counter)  # frame bytes per target worker
    load_s: float = 0.0
    total_s: float = 0.0

    def layer(self, k: int) -> LayerMetrics:
        if k not in self.layers:
            self.layers[k] = LayerMetrics(k)
        return self.layers[k]

    def totals(self) -> dict[str, float]:
        keys = [k for k in LayerMetrics.__dataclass_fields__ if k not in _NOT_SUMMED]
        return {k: sum(getattr(m, k) for m in self.layers.values()) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "load_s": self.load_s,
            "total_s": self.total_s,
            "totals": self.totals(),
            "api_calls": dict(self.api_calls),
            "api_bytes": dict(self.api_bytes),
            "billed_requests": dict(self.billed_requests),
            "bytes_to": {str(target): n for target, n in sorted(self.bytes_to.items())},
            "layers": [asdict(self.layers[k]) for k in sorted(self.layers)],
        }


def summarize(workers: list[WorkerMetrics]) -> dict[str, Any]:
    """Run-wide totals: the figures a report sets beside the published ones."""
    totals: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    billed: Counter[str] = Counter()
    for w in workers:
        totals.update(w.totals())
        calls.update(w.api_calls)
        billed.update(w.billed_requests)
    return {"totals": dict(totals), "api_calls": dict(calls), "billed_requests": dict(billed)}
