"""The Plan state: validate the request, cut the model into shards, create the channel.

Input (the execution's input, as ``request``; the execution name from the context)::

    {"model": "models/net.fsdm" | "models/net-tsv/",   key in the bucket (or s3://bucket/key)
     "input": "inputs/mnist.tsv.gz",                    row<TAB>col<TAB>value, 1-based
     "workers": 8, "channel": "queue", "partition": "hypergraph", "seed": 0,
     "dtype": "float64", "message_limit": 1048576, "receive_timeout_s": 120,
     "layers_per_block": 20, "bias": null, "rows": null, "expect": null,
     "strategy": "auto", "stages": null, "groups": null, "microbatches": null,
     "objective": "cost", "deadline_s": null, "budget_usd": null}

``strategy`` (neuron, data, pipeline, hybrid) with ``stages`` / ``groups`` /
``microbatches`` compiles to the run's shape (strategy/compile.py); ``workers`` is the
number of tasks, i.e. Lambda functions per block. ``auto`` (the default) lets the planner
choose the strategy, shape and (when the request names none) the channel by predicted
``objective`` (cost or latency), within ``deadline_s`` (p95) and ``budget_usd`` if given,
using at most ``workers`` tasks (cloud/auto_plan.py).

Everything but model, input and workers has a default (cloud.settings). Output: the
small state the rest of the machine carries (``run``), the Map's items (worker ids)
and the block cursor. Shards, input slices and a manifest go to S3 first, then the
channel's resources are created (a failed setup is torn down before the error is
raised), so a failure cleanup always finds the manifest it needs to tear down.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import scipy.sparse as sp
from botocore.exceptions import BotoCoreError, ClientError

from fsd_inference.channels import (
    AWS_TRANSPORTS,
    NO_EXCHANGE,
    TRANSPORTS,
    ChannelConfig,
    Transport,
)
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
from fsd_inference.cloud.schema import (
    Count,
    Depth,
    Key,
    MessageLimit,
    ReceiveTimeout,
    SchemaError,
    Seed,
    Workers,
    load,
    require_finite,
    to_builtins,
)
from fsd_inference.cloud.settings import CloudSettings, function_memory_mb
from fsd_inference.constants import DEFAULT_DTYPE, DTYPES, MAX_PARTS, OBJECTIVES
from fsd_inference.exceptions import ConfigError, FsdError
from fsd_inference.metrics import WorkerMetrics
from fsd_inference.model.base import NetworkSource
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.load import open_model
from fsd_inference.model.tsv import LAYER_FILE, read_input
from fsd_inference.partition import PARTITIONERS
from fsd_inference.partition.cache import cache_path, ownership
from fsd_inference.partition.plan import CommPlan
from fsd_inference.partition.shard_cache import cached_shards
from fsd_inference.storage import Storage, storage_for
from fsd_inference.strategy import AUTO, STRATEGIES, Shape, compile_shape, shape_owners
from fsd_inference.strategy.memory import task_memory_mb

DEFAULT_RECEIVE_TIMEOUT_S = 120.0
UPLOAD_THREADS = 8
DEFAULT_STRATEGY = AUTO

TransportFactory = Callable[[str, int, ChannelConfig], Transport]


class RequestSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The execution's input as sent (cloud.schema bounds every field); None: default."""

    model: str
    input: str
    workers: Workers
    channel: str | None = None
    partition: str | None = None
    seed: Seed = 0
    dtype: str = DEFAULT_DTYPE
    message_limit: MessageLimit | None = None
    receive_timeout_s: ReceiveTimeout = DEFAULT_RECEIVE_TIMEOUT_S
    layers_per_block: Depth | None = None  # None: the deployment's default, raised if needed
    bias: float | None = None
    rows: Count | None = None
    expect: str | None = None
    strategy: str | None = None  # None: DEFAULT_STRATEGY
    stages: Workers | None = None
    groups: Workers | None = None
    microbatches: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS)] | None = None
    objective: str | None = None  # auto only; None: cost
    deadline_s: Annotated[float, msgspec.Meta(gt=0)] | None = None  # auto only
    budget_usd: Annotated[float, msgspec.Meta(gt=0)] | None = None  # auto only

    def __post_init__(self) -> None:
        require_finite("bias", self.bias)
        require_finite("deadline_s", self.deadline_s)
        require_finite("budget_usd", self.budget_usd)


class PlanRequest(msgspec.Struct, frozen=True):
    """The request with the deployment's defaults filled in and keys resolved."""

    model: str
    input: str
    workers: int
    channel: str
    partition: str
    seed: int
    dtype: str
    message_limit: int
    receive_timeout_s: float
    layers_per_block: int | None
    bias: float | None
    rows: int | None
    expect: str | None
    strategy: str = "neuron"
    stages: int | None = None
    groups: int | None = None
    microbatches: int | None = None
    channel_named: bool = True  # False: the deployment's default (auto may choose)
    objective: str = "cost"
    deadline_s: float | None = None
    budget_usd: float | None = None


def _key(name: str, value: str | None, bucket: str) -> str | None:
    """A key in the application's bucket (``s3://bucket/`` accepted for that bucket)."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("s3://"):
        owner, _, value = value[5:].partition("/")
        if owner != bucket:
            raise RequestError(name, f"s3://{owner}/{value} is not in the application's "
                                     f"bucket {bucket} (the functions may read only that "
                                     f"one): copy it there")
    try:
        return load(Key, value, "the request")
    except SchemaError as exc:
        raise RequestError(name, f"must be a key such as models/net.fsdm (no leading '/', "
                                 f"no '.' or '..' segments), got {value!r}") from exc


def parse_request(data: Any, settings: CloudSettings,
                  channels: Collection[str] = AWS_TRANSPORTS) -> PlanRequest:
    """A validated request with defaults filled in; RequestError names the bad field.

    ``channels``: those the tasks can use (Lambda functions: the AWS ones; local
    processes also the memory channel)."""
    if not isinstance(data, dict):
        raise RequestError("request", f"must be a JSON object, got {type(data).__name__}")
    spec = load(RequestSpec, data, "the request", RequestError)
    bucket = settings.bucket
    channel = spec.channel or settings.channel
    if channel not in TRANSPORTS or channel not in channels or channel == NO_EXCHANGE:
        raise RequestError("channel", f"{channel!r} cannot connect these tasks; choose "
                                      f"one of {', '.join(sorted(channels))}")
    strategy = spec.strategy or DEFAULT_STRATEGY
    if strategy not in (*STRATEGIES, AUTO):
        raise RequestError("strategy", f"unknown strategy {strategy!r}; choose one of "
                                       f"{', '.join((AUTO, *STRATEGIES))}")
    _check_auto_fields(spec, strategy)
    partition = spec.partition or settings.partition
    if partition not in PARTITIONERS:
        raise RequestError("partition", f"unknown partitioner {partition!r}; choose one of "
                                        f"{', '.join(sorted(PARTITIONERS))}")
    if spec.dtype not in DTYPES:
        raise RequestError("dtype", f"{spec.dtype!r} is not supported; choose one of "
                                    f"{', '.join(DTYPES)}")
    if spec.workers > settings.max_workers:
        raise RequestError("workers", f"must be between 1 and {settings.max_workers} (this "
                                      f"deployment's MaxWorkers), got {spec.workers}")
    model = _key("model", spec.model, bucket)
    source = _key("input", spec.input, bucket)
    assert model is not None and source is not None
    return PlanRequest(
        model=model, input=source, workers=spec.workers, channel=channel,
        partition=partition, seed=spec.seed, dtype=spec.dtype,
        message_limit=spec.message_limit or settings.message_limit,
        receive_timeout_s=float(spec.receive_timeout_s),
        layers_per_block=spec.layers_per_block, bias=spec.bias, rows=spec.rows,
        expect=_key("expect", spec.expect, bucket), strategy=strategy,
        stages=spec.stages, groups=spec.groups, microbatches=spec.microbatches,
        channel_named=spec.channel is not None, objective=spec.objective or OBJECTIVES[0],
        deadline_s=spec.deadline_s, budget_usd=spec.budget_usd,
    )


def _check_auto_fields(spec: RequestSpec, strategy: str) -> None:
    """The planner's fields belong to auto, the shape's fields to a named strategy."""
    if strategy == AUTO:
        for name in ("stages", "groups", "microbatches"):
            if getattr(spec, name) is not None:
                raise RequestError(name, "does not apply to strategy auto (the planner "
                                         "chooses the shape): name a strategy, or leave "
                                         f"{name} out")
        if spec.objective is not None and spec.objective not in OBJECTIVES:
            raise RequestError("objective", f"unknown objective {spec.objective!r}; choose "
                                            f"one of {', '.join(OBJECTIVES)}")
        return
    for name in ("objective", "deadline_s", "budget_usd"):
        if getattr(spec, name) is not None:
            raise RequestError(name, f"applies to strategy auto only, not {strategy}")


def map_mode(workers: int, settings: CloudSettings) -> MapMode:
    return "inline" if workers <= settings.inline_map_limit else "distributed"


def choose_layers_per_block(request: PlanRequest, depth: int, mode: MapMode,
                            settings: CloudSettings, shape: Shape) -> tuple[int, list[str]]:
    """Layers per block within the history budget: a requested value is honoured or
    refused, the deployment's default is raised when the run would not fit. A shape with
    pipeline stages runs in one block: its stages work at the same time, on different
    layers, so a block boundary would stop all but one of them."""
    notes: list[str] = []
    tasks = shape.tasks
    if len(shape.stages) > 1:
        if request.layers_per_block is not None and request.layers_per_block < depth:
            raise RequestError("layers_per_block", f"{shape.describe()} runs all {depth} "
                                                   f"layers in one block; leave "
                                                   f"layers_per_block out")
        return depth, notes
    needed = min_layers_per_block(depth, tasks, mode)
    if request.layers_per_block is not None:
        chosen = min(request.layers_per_block, depth)
        if chosen < needed:
            blocks = -(-depth // chosen)
            raise RequestError(
                "layers_per_block",
                f"{chosen} layers per block makes {blocks} blocks of {tasks} "
                f"workers ({mode} Map), {history_events(tasks, blocks, mode):,} "
                f"history events; an execution may use {HISTORY_BUDGET:,} (limit 25,000, "
                f"the rest kept for retries), at most {max_blocks(tasks, mode)} "
                f"blocks: use at least {needed} layers per block")
        return chosen, notes
    chosen = min(settings.layers_per_block, depth)
    if chosen < needed:
        notes.append(f"layers_per_block raised from {chosen} to {needed} to keep "
                     f"{depth} layers x {tasks} workers under {HISTORY_BUDGET:,} "
                     f"history events")
        chosen = needed
    return chosen, notes


# ----------------------------------------------------------------------------- loading


def _load_network(storage: Storage, request: PlanRequest, directory: Path) -> NetworkSource:
    """The model downloaded to ``directory`` and opened lazily: planning reads it layer by
    layer, so the step's memory holds a layer, not the network."""
    if request.model.endswith(SUFFIX):
        path = (storage.local_path(request.model)
                or storage.get_file(request.model, directory / Path(request.model).name))
        return open_model(path, bias=request.bias, dtype=request.dtype)
    prefix = request.model if request.model.endswith("/") else request.model + "/"
    layer_keys = [k for k in storage.keys(prefix) if LAYER_FILE.match(k[len(prefix):])]
    if not layer_keys:
        raise RequestError("model", f"{storage.uri(request.model)} is neither a "
                                    f"{SUFFIX} bundle nor a prefix holding n<N>-l<k>.tsv files")
    folder = directory / "model"
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda k: storage.get_file(k, folder / k[len(prefix):]), layer_keys))
    return open_model(folder, bias=request.bias, dtype=request.dtype)


def _load_inputs(storage: Storage, request: PlanRequest, network: NetworkSource,
                 directory: Path) -> sp.csr_matrix:
    path = (storage.local_path(request.input)
            or storage.get_file(request.input, directory / Path(request.input).name))
    inputs = read_input(path, neurons=network.neurons, dtype=request.dtype)
    if request.rows is not None:
        inputs = sp.csr_matrix(inputs[:request.rows])
    return inputs


def _owners(storage: Storage, request: PlanRequest, network: NetworkSource, shape: Shape,
            directory: Path, settings: CloudSettings) -> tuple[np.ndarray, bool]:
    """Owners for the shape, one partition per stage through partition.cache, with the
    bucket's plans/ as its backing store: a partition computed by any earlier execution
    is downloaded, not recomputed. Returns (owners, every partition was cached)."""
    cached = []
    root = settings.partition_cache or directory

    def partition(sub: NetworkSource, parts: int) -> np.ndarray:
        local = cache_path(sub, request.partition, parts, request.seed, root)
        key = plan_key(local.name)
        if not local.is_file() and storage.exists(key):
            storage.get_file(key, local)
        result = ownership(sub, request.partition, parts, request.seed, root)
        if not result.cached:  # new, or the stored one did not fit and was recomputed
            storage.put_file(key, result.path)
        cached.append(result.cached)
        return result.owners

    owners = shape_owners(network, shape, partition)
    return owners, bool(cached) and all(cached)


def _upload_work(storage: Storage, run: RunInfo, network: NetworkSource,
                 inputs: sp.csr_matrix, owners: np.ndarray, directory: Path,
                 settings: CloudSettings) -> tuple[CommPlan, bool]:
    """Shards are cut into local files layer by layer (write_shards), one per slot (every
    row group shares them), through the shard cache when the deployment has a cache
    directory, checked against the function's memory, then uploaded with one input
    slice per task of the first stage (its rows, its columns). Returns the plan and
    whether its shards came from the cache."""
    shape = run.shape
    layout = run.layout
    plan, cached = cached_shards(network, owners, shape.width, run.dtype,
                                 lambda slot: directory / f"shard-{slot}.fsdm",
                                 settings.partition_cache)

    check_memory(shape, network.neurons, plan, run.batch, run.dtype,
                 settings.worker_memory_mb)

    def upload_shard(slot: int) -> None:
        path = directory / f"shard-{slot}.fsdm"
        storage.put_file(layout.shard(slot), path)
        path.unlink()

    def upload_input(task: int) -> None:
        info = shape.task(task)
        columns = np.flatnonzero(owners[0] == info.slot)
        rows = inputs[shape.group_row_ids(info.group, run.batch)]
        if columns.size < inputs.shape[1]:  # a data task takes every column as it is
            rows = rows[:, columns]
        path = write_activations(directory / f"input-{task}.fsdm", sp.csr_matrix(rows),
                                 columns, {"execution": run.execution, "worker": task,
                                           "layer": 0})
        storage.put_file(layout.input(task), path)
        path.unlink()

    starters = [g * shape.width + slot for g in range(shape.groups)
                for slot in shape.first_slots()]
    with ThreadPoolExecutor(min(UPLOAD_THREADS, max(shape.width, len(starters)))) as pool:
        list(pool.map(upload_shard, range(shape.width)))
        list(pool.map(upload_input, starters))
    return plan, cached


def check_memory(shape: Shape, neurons: int, plan: CommPlan, batch: int, dtype: str,
                 memory_mb: int) -> None:
    """Refuse a shape whose largest task would not fit its function's memory: the
    weights it holds (CSR: index + value per edge) and a dense-enough bound on its
    activations (every row of its group, all its columns, in ``dtype``)."""
    weights = int(plan.work.sum(axis=0).max()) * (4 + np.dtype(dtype).itemsize)
    needed_mb = task_memory_mb(shape, neurons, int(plan.work.sum(axis=0).max()), batch, dtype)
    if needed_mb > memory_mb:
        raise RequestError(
            "strategy", f"{shape.describe()}: a task needs about {needed_mb:,.0f} MB (weights "
                        f"{weights / 2**20:,.0f} MB) but a worker function has {memory_mb:,} "
                        f"MB: use more parts or stages, or raise WorkerMemory")


# ----------------------------------------------------------------------------- the step


def plan_step(execution_name: str, request_data: Any, settings: CloudSettings | None = None,
              storage: Storage | None = None,
              transport_factory: TransportFactory | None = None,
              channels: Collection[str] = AWS_TRANSPORTS) -> dict[str, Any]:
    """Run the Plan state; returns ``{"run", "items", "cursor"}`` (JSON-safe, small)."""
    started = time.perf_counter()
    settings = settings or CloudSettings()
    request = parse_request(request_data, settings, channels)
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
        auto: dict[str, Any] | None = None
        if not request.model.endswith(SUFFIX):
            bundle = model_key(fingerprint)
            if not storage.exists(bundle):
                save_network(network, directory / "model.fsdm")
                storage.put_file(bundle, directory / "model.fsdm")
            notes.append(f"the TSV model is cached as {storage.uri(bundle)}: "
                         f"pass that key as model next time to skip the conversion")
        if request.strategy == AUTO:
            from fsd_inference.cloud.auto_plan import resolve_auto_request  # the planner's
            # imports (the predictor, its service model) only for the runs that use it

            tick = time.perf_counter()
            request, auto = resolve_auto_request(request, network, inputs, settings)
            phases["auto_s"] = time.perf_counter() - tick
            notes.append(f"auto chose {auto['chosen']}: {auto['why']}")
        try:
            shape = compile_shape(request.strategy, request.workers, network.depth,
                                  int(inputs.shape[0]), stages=request.stages,
                                  groups=request.groups, microbatches=request.microbatches)
        except ConfigError as exc:
            raise RequestError("strategy", str(exc)) from exc
        mode = map_mode(shape.tasks, settings)
        layers_per_block, raised = choose_layers_per_block(request, network.depth, mode,
                                                           settings, shape)
        notes.extend(raised)
        run = RunInfo(
            execution=execution, bucket=storage.bucket, workers=shape.tasks,
            channel=NO_EXCHANGE if shape.exchanges_nothing else request.channel,
            message_limit=request.message_limit,
            receive_timeout_s=request.receive_timeout_s, dtype=request.dtype,
            neurons=network.neurons, depth=network.depth, batch=int(inputs.shape[0]),
            layers_per_block=layers_per_block, blocks=-(-network.depth // layers_per_block),
            map=mode, model=fingerprint, shape=shape,
        )
        tick = time.perf_counter()
        owners, cached = _owners(storage, request, network, shape, directory, settings)
        phases["partition_s"] = time.perf_counter() - tick
        if cached:
            notes.append("partition loaded from the plans/ cache")
        tick = time.perf_counter()
        plan, shards_cached = _upload_work(storage, run, network, inputs, owners, directory,
                                           settings)
        if shards_cached:
            notes.append("shards linked from the shard cache")
        network.close()
        phases["upload_s"] = time.perf_counter() - tick

    manifest = {
        "run": run.to_dict(),
        "request": to_builtins(request),
        "auto": auto,
        "execution_name": execution_name,
        "notes": notes,
        "history_events": history_events(run.workers, run.blocks, run.map),
        "plan": {
            "shape": shape.to_dict(),
            "edges": int(plan.work.sum()),  # every weight is in exactly one shard
            "neuron_copies_total": int(plan.copies.sum()),
            "neurons_sent_total": plan.total_neurons,
            "neurons_sent_per_layer": plan.neurons_per_layer.tolist(),
            "messages_per_layer": plan.messages_per_layer.tolist(),
        },
        "phases_s": phases,
    }
    storage.put_json(run.layout.manifest, manifest)  # before setup: cleanup reads it
    tick = time.perf_counter()
    factory = (default_transport_class(run.channel) if run.channel == NO_EXCHANGE
               else transport_factory or default_transport_class(run.channel))
    transport = factory(run.execution, run.workers, run.channel_config(settings.aws))
    try:
        transport.setup()
    except BaseException:
        # the setup's error is the one to report; a teardown that fails too leaves the
        # manifest, so the failure cleanup tears down what is left
        with suppress(FsdError, ClientError, BotoCoreError):
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
