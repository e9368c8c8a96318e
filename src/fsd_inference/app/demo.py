"""The demo's data, and what ``fsd emulator --demo`` puts in the bucket for events/.

- The demo network (1024 x 120, seed 0) that ``fsd run`` runs, generated once and
  cached as a bundle (:func:`demo_model`), and the small 1024 x 6 network (seed 3) the
  small sample events use.
- :func:`prepare_events`: uploads both networks and the MNIST sample under the keys the
  events name (``models/...``, ``inputs/...``), then plans and computes one small run,
  :data:`EVENTS_EXECUTION`, through the stack's own functions, exactly as the state
  machine would, up to but not including Gather: the worker, gather and cleanup events
  act on that run (a worker or a gather event needs a planned run; a worker needs its
  peers, so the worker event is the template of a block, see the README).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsd_inference.cloud.stack import StackOutputs, lambda_invoke_client
from fsd_inference.config import AwsConfig, cache_dir
from fsd_inference.exceptions import FsdError
from fsd_inference.model.binary import SUFFIX, save_network
from fsd_inference.model.generate import GeneratorParams, generate
from fsd_inference.model.inputs import sample_input_path
from fsd_inference.storage import storage_for

DEMO = GeneratorParams(1024, 120, 0)
SMALL = GeneratorParams(1024, 6, 3)
INPUT_KEY = "inputs/mnist-1024-first10k.tsv.gz"
EVENTS_EXECUTION = "demo-1024x6-p3-queue"
EVENTS_REQUEST: dict[str, Any] = {
    "model": f"models/radixnet-1024x6-seed3{SUFFIX}", "input": INPUT_KEY, "rows": 300,
    "workers": 3, "channel": "queue", "partition": "hypergraph", "layers_per_block": 2,
    "strategy": "neuron"}
Say = Callable[[str], None]


class DemoError(FsdError):
    """Preparing the demo data failed; names the step and the function's error."""


def bundle_name(params: GeneratorParams) -> str:
    return f"radixnet-{params.neurons}x{params.layers}-seed{params.seed}{SUFFIX}"


def cached_network(params: GeneratorParams, say: Say | None = None) -> Path:
    """A generated network as a bundle under the cache directory (made once)."""
    path = cache_dir() / bundle_name(params)
    if not path.is_file():
        if say is not None:
            say(f"generating the network {params.neurons} x {params.layers} (seed "
                f"{params.seed}) into {path}")
        save_network(generate(params), path)
    return path


def demo_model(say: Say | None = None) -> Path:
    """The demo network (1024 x 120, seed 0), generated once and cached as a bundle."""
    return cached_network(DEMO, say)


@dataclass(frozen=True)
class DemoData:
    keys: list[str]  # what was uploaded
    run: dict[str, Any]  # the planned and computed run of EVENTS_EXECUTION


def _invoke(client: Any, function: str, payload: dict[str, Any], what: str) -> Any:
    response = client.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read() or b"null")
    if "FunctionError" in response:
        message = body.get("errorMessage", body) if isinstance(body, dict) else body
        raise DemoError(f"{what}: {function} failed: {message}")
    return body


def prepare_events(aws: AwsConfig, stack: StackOutputs, say: Say | None = None) -> DemoData:
    """Upload what events/ names and compute their run (see the module doc)."""
    storage = storage_for(stack.bucket, aws)
    keys = []
    for params in (DEMO, SMALL):
        key = f"models/{bundle_name(params)}"
        storage.put_file(key, cached_network(params, say))
        keys.append(key)
    storage.put_file(INPUT_KEY, sample_input_path())
    keys.append(INPUT_KEY)
    client = lambda_invoke_client(aws)
    planned = _invoke(client, stack.functions["Plan"],
                      {"execution": EVENTS_EXECUTION, "request": EVENTS_REQUEST},
                      f"planning {EVENTS_EXECUTION}")
    run = planned["run"]
    with ThreadPoolExecutor(run["workers"]) as pool:  # a block's workers run together
        for block in range(run["blocks"]):
            list(pool.map(lambda worker, b=block: _invoke(
                client, stack.functions["Worker"], {"run": run, "block": b, "worker": worker},
                f"block {b} of {EVENTS_EXECUTION}"), range(run["workers"])))
    return DemoData(keys, run)
