"""The Plan state: validate the request, cut the model into shards, create the channel.

Input (the execution's input, as ``request``; the execution name from the context)::

    {"model": "models/net.fsdm" | "models/net-tsv/",   key in the bucket (or s3://bucket/key)
     "input": "inputs/mnist.tsv.gz",                    row<TAB>col<TAB>value, 1-based
     "workers": 8, "channel": "queue", "partition": "hypergraph", "seed": 0,
     "dtype": "float64", "message_limit": 1048576, "receive_timeout_s": 120,
     "layers_per_block": 20, "bias": null, "rows": null, "expect": null, "parts": 1}

Everything but model, input and workers has a default (cloud.settings). Output: the
small state the rest of the machine carries (``run``), the Map's items (worker ids)
and the block cursor. Shards, input slices and a manifest go to S3 first, then the
channel's resources are created (a failed setup is torn down before the error is
raised), so a failure cleanup always finds the manifest it needs to tear down.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fsd_inference.channels import AWS_TRANSPORTS, TRANSPORTS, ChannelConfig, Transport
from fsd_inference.channels import transport_class as default_transport_class
from fsd_inference.cloud.activations import write_activations
from fsd_inference.cloud.errors import RequestError
from fsd_inference.cloud.history import (
    HISTORY_BUDGET,
    MapMode,
    history_events,
    max_blocks,
    min_layers_per_block,
)
from fsd_inference.cloud.layout import model_key, plan_key, run_id
from fsd_inference.cloud.run import RunInfo
from fsd_inference.cloud.settings import CloudSettings, function_memory_mb
from fsd_inference.cloud.storage import Storage, storage_for
from fsd_inference.constants import DEFAULT_DTYPE, DEFAULT_PARTS, DTYPES, MAX_PARTS
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.load import load_model
from fsd_inference.model.network import Network
from fsd_inference.model.tsv import LAYER_FILE, read_input
from fsd_inference.partition import PARTITIONERS
from fsd_inference.partition.cache import cache_path, ownership
from fsd_inference.partition.plan import CommPlan, build_plan, save_shard

# Workers of a failed block attempt may still be waiting on their peers when the block is
# retried; they give up after receive_timeout_s. The ASL retries a block after 150 s, so
# the timeout stays below that (tests/unit/test_template.py checks the pair).
MAX_RECEIVE_TIMEOUT_S = 120.0
DEFAULT_RECEIVE_TIMEOUT_S = 120.0
MIN_MESSAGE_LIMIT = 1024
MAX_MESSAGE_LIMIT = 1024 * 1024
UPLOAD_THREADS = 8

TransportFactory = Callable[[str, int, ChannelConfig], Transport]


@dataclass(frozen=True)
class PlanRequest:
    model: str
    input: str
    workers: int
    channel: str
    partition: str
    seed: int
    dtype: str
    message_limit: int
    receive_timeout_s: float
    layers_per_block: int | None  # None: the deployment's default, raised if needed
    bias: float | None
    rows: int | None
    expect: str | None
    parts: int = DEFAULT_PARTS


_REQUIRED = ("model", "input", "workers")
_OPTIONAL = ("channel", "partition", "seed", "dtype", "message_limit", "receive_timeout_s",
             "layers_per_block", "bias", "rows", "expect", "parts")


def _int(data: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise RequestError(name, f"must be {bound}, got {value}")
    return value


def _key(data: dict[str, Any], name: str, bucket: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RequestError(name, f"must be an S3 key in the bucket, got {value!r}")
    value = value.strip()
    if value.startswith("s3://"):
        owner, _, key = value[5:].partition("/")
        if owner != bucket:
            raise RequestError(name, f"{value} is not in the application's bucket {bucket} "
                                     f"(the functions may read only that one): copy it there")
        value = key
    if not value or value.startswith("/"):
        raise RequestError(name, f"must be a key such as models/net.fsdm, got {value!r}")
    return value


def parse_request(data: Any, settings: CloudSettings) -> PlanRequest:
    """A validated request with defaults filled in; RequestError names the bad field."""
    if not isinstance(data, dict):
        raise RequestError("request", f"must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RequestError(unknown[0], f"unknown field; allowed: "
                                       f"{', '.join(_REQUIRED + _OPTIONAL)}")
    for name in _REQUIRED:
        if data.get(name) is None:
            raise RequestError(name, "is required")
    bucket = settings.bucket
    channel = data.get("channel") or settings.channel
    cloud_channels = sorted(AWS_TRANSPORTS)
    if channel not in TRANSPORTS or channel not in AWS_TRANSPORTS:
        raise RequestError("channel", f"{channel!r} cannot connect Lambda functions; choose "
                                      f"one of {', '.join(cloud_channels)}")
    partition = data.get("partition") or settings.partition
    if partition not in PARTITIONERS:
        raise RequestError("partition", f"unknown partitioner {partition!r}; choose one of "
                                        f"{', '.join(sorted(PARTITIONERS))}")
    dtype = data.get("dtype") or DEFAULT_DTYPE
    if dtype not in DTYPES:
        raise RequestError("dtype", f"{dtype!r} is not supported; choose one of "
                                    f"{', '.join(DTYPES)}")
    timeout = data.get("receive_timeout_s", DEFAULT_RECEIVE_TIMEOUT_S)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not 1 <= timeout <= MAX_RECEIVE_TIMEOUT_S):
        raise RequestError("receive_timeout_s", f"must be a number of seconds between 1 and "
                                                f"{MAX_RECEIVE_TIMEOUT_S:g}, got {timeout!r}")
    bias = data.get("bias")
    if bias is not None and (isinstance(bias, bool) or not isinstance(bias, int | float)
                             or not math.isfinite(bias)):
        raise RequestError("bias", f"must be a finite number, got {bias!r}")
    workers = _int(data, "workers", 1, settings.max_workers)
    assert workers is not None
    message_limit = _int(data, "message_limit", MIN_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT)
    model = _key(data, "model", bucket)
    source = _key(data, "input", bucket)
    assert model is not None and source is not None
    return PlanRequest(
        model=model, input=source, workers=workers, channel=channel, partition=partition,
        seed=_int(data, "seed", 0) or 0, dtype=dtype,
        message_limit=message_limit or settings.message_limit,
        receive_timeout_s=float(timeout),
        layers_per_block=_int(data, "layers_per_block", 1),
        bias=None if bias is None else float(bias), rows=_int(data, "rows", 1),
        expect=_key(data, "expect", bucket),
        parts=_int(data, "parts", 1, MAX_PARTS) or DEFAULT_PARTS,
    )


def map_mode(workers: int, settings: CloudSettings) -> MapMode:
    return "inline" if workers <= settings.inline_map_limit else "distributed"


def choose_layers_per_block(request: PlanRequest, depth: int, mode: MapMode,
                            settings: CloudSettings) -> tuple[int, list[str]]:
    """Layers per block within the history budget: a requested value is honoured or
    refused, the deployment's default is raised when the run would not fit."""
    notes: list[str] = []
    needed = min_layers_per_block(depth, request.workers, mode)
    if request.layers_per_block is not None:
        chosen = min(request.layers_per_block, depth)
        if chosen < needed:
            blocks = -(-depth // chosen)
            raise RequestError(
                "layers_per_block",
                f"{chosen} layers per block makes {blocks} blocks of {request.workers} "
                f"workers ({mode} Map), {history_events(request.workers, blocks, mode):,} "
                f"history events; an execution may use {HISTORY_BUDGET:,} (limit 25,000, "
                f"the rest kept for retries), at most {max_blocks(request.workers, mode)} "
                f"blocks: use at least {needed} layers per block")
        return chosen, notes
    chosen = min(settings.layers_per_block, depth)
    if chosen < needed:
        notes.append(f"layers_per_block raised from {chosen} to {needed} to keep "
                     f"{depth} layers x {request.workers} workers under {HISTORY_BUDGET:,} "
                     f"history events")
        chosen = needed
    return chosen, notes


# ----------------------------------------------------------------------------- loading


def _load_network(storage: Storage, request: PlanRequest, directory: Path) -> Network:
    if request.model.endswith(SUFFIX):
        path = storage.get_file(request.model, directory / Path(request.model).name)
        return load_model(path, bias=request.bias, dtype=request.dtype)
    prefix = request.model if request.model.endswith("/") else request.model + "/"
    layer_keys = [k for k in storage.keys(prefix) if LAYER_FILE.match(k[len(prefix):])]
    if not layer_keys:
        raise RequestError("model", f"s3://{storage.bucket}/{request.model} is neither a "
                                    f"{SUFFIX} bundle nor a prefix holding n<N>-l<k>.tsv files")
    folder = directory / "model"
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda k: storage.get_file(k, folder / k[len(prefix):]), layer_keys))
    return load_model(folder, bias=request.bias, dtype=request.dtype)


def _load_inputs(storage: Storage, request: PlanRequest, network: Network,
                 directory: Path) -> sp.csr_matrix:
    path = storage.get_file(request.input, directory / Path(request.input).name)
    inputs = read_input(path, neurons=network.neurons, dtype=request.dtype)
    if request.rows is not None:
        inputs = sp.csr_matrix(inputs[:request.rows])
    return inputs


def _owners(storage: Storage, request: PlanRequest, network: Network,
            directory: Path) -> tuple[np.ndarray, bool]:
    """The partition through partition.cache, with the bucket's plans/ as its backing
    store: a partition computed by any earlier execution is downloaded, not recomputed."""
    local = cache_path(network, request.partition, request.workers, request.seed, directory)
    key = plan_key(local.name)
    if storage.exists(key):
        storage.get_file(key, local)
    result = ownership(network, request.partition, request.workers, request.seed, directory)
    if not result.cached:  # new, or the stored one did not fit and was recomputed
        storage.put_file(key, result.path)
    return result.owners, result.cached


def _upload_work(storage: Storage, run: RunInfo, network: Network, inputs: sp.csr_matrix,
                 owners: np.ndarray, directory: Path) -> CommPlan:
    plan, shards = build_plan(network, owners, run.workers)
    layout = run.layout

    def upload(p: int) -> None:
        shard = shards[p]
        shard_path = directory / f"shard-{p}.fsdm"
        save_shard(shard, shard_path)
        storage.put_file(layout.shard(p), shard_path)
        shard_path.unlink()
        input_path = write_activations(
            directory / f"input-{p}.fsdm", sp.csr_matrix(inputs[:, shard.input_columns]),
            shard.input_columns, {"execution": run.execution, "worker": p, "layer": 0})
        storage.put_file(layout.input(p), input_path)
        input_path.unlink()

    with ThreadPoolExecutor(min(UPLOAD_THREADS, run.workers)) as pool:
        list(pool.map(upload, range(run.workers)))
    return plan


# ----------------------------------------------------------------------------- the step


def plan_step(execution_name: str, request_data: Any, settings: CloudSettings | None = None,
              storage: Storage | None = None,
              transport_factory: TransportFactory | None = None) -> dict[str, Any]:
    """Run the Plan state; returns ``{"run", "items", "cursor"}`` (JSON-safe, small)."""
    started = time.perf_counter()
    settings = settings or CloudSettings()
    request = parse_request(request_data, settings)
    execution = run_id(execution_name)
    calls = WorkerMetrics(-1)  # counts this step's S3 calls (worker -1: not a worker)
    storage = storage or storage_for(settings.bucket, settings.aws, calls)
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fsd-plan-", dir=settings.scratch_dir) as tmp:
        directory = Path(tmp)
        tick = time.perf_counter()
        network = _load_network(storage, request, directory)
        inputs = _load_inputs(storage, request, network, directory)
        fingerprint = network.fingerprint()
        phases["load_s"] = time.perf_counter() - tick
        notes: list[str] = []
        if not request.model.endswith(SUFFIX):
            bundle = model_key(fingerprint)
            if not storage.exists(bundle):
                save_network(network, directory / "model.fsdm")
                storage.put_file(bundle, directory / "model.fsdm")
            notes.append(f"the TSV model is cached as s3://{storage.bucket}/{bundle}: "
                         f"pass that key as model next time to skip the conversion")
        mode = map_mode(request.workers, settings)
        layers_per_block, raised = choose_layers_per_block(request, network.depth, mode,
                                                           settings)
        notes.extend(raised)
        run = RunInfo(
            execution=execution, bucket=storage.bucket, workers=request.workers,
            channel=request.channel, message_limit=request.message_limit,
            receive_timeout_s=request.receive_timeout_s, dtype=request.dtype,
            neurons=network.neurons, depth=network.depth, batch=int(inputs.shape[0]),
            layers_per_block=layers_per_block, blocks=-(-network.depth // layers_per_block),
            map=mode, model=fingerprint, parts=request.parts,
        )
        tick = time.perf_counter()
        owners, cached = _owners(storage, request, network, directory)
        phases["partition_s"] = time.perf_counter() - tick
        if cached:
            notes.append("partition loaded from the plans/ cache")
        tick = time.perf_counter()
        plan = _upload_work(storage, run, network, inputs, owners, directory)
        phases["upload_s"] = time.perf_counter() - tick

    manifest = {
        "run": run.to_dict(),
        "request": asdict(request),
        "execution_name": execution_name,
        "notes": notes,
        "history_events": history_events(run.workers, run.blocks, run.map),
        "plan": {
            "neurons_sent_total": plan.total_neurons,
            "neurons_sent_per_layer": plan.neurons_per_layer.tolist(),
            "messages_per_layer": plan.messages_per_layer.tolist(),
        },
        "phases_s": phases,
    }
    storage.put_json(run.layout.manifest, manifest)  # before setup: cleanup reads it
    tick = time.perf_counter()
    factory = transport_factory or default_transport_class(run.channel)
    transport = factory(run.execution, run.workers, run.channel_config(settings.aws))
    try:
        transport.setup()
    except BaseException:
        transport.teardown()
        raise
    phases["setup_s"] = time.perf_counter() - tick
    phases["total_s"] = time.perf_counter() - started
    manifest["lambda"] = {"plan": invocation(phases["total_s"], function_memory_mb())}
    manifest["api_calls"] = dict(calls.api_calls)
    storage.put_json(run.layout.manifest, manifest)
    return {"run": run.to_dict(), "items": list(range(run.workers)), "cursor": {"block": 0},
            "notes": notes}


def invocation(seconds: float, memory_mb: int) -> dict[str, float]:
    """One invocation's figures for the cost model (memory 0: unknown, use the default)."""
    return {"invocations": 1, "seconds": seconds, "memory_mb": memory_mb}
