"""Where an execution keeps its data in the bucket.

    runs/{execution}/run.json                 manifest: the run, plan statistics, timings
    runs/{execution}/shard-{p}.fsdm           worker p's slice of the model (all layers)
    runs/{execution}/input-{p}.fsdm           worker p's columns of Y_0
    runs/{execution}/ckpt/b{block}/w{p}.fsdm  worker p's activations after the block
    runs/{execution}/metrics/b{block}/w{p}.json
    results/{execution}/categories.txt        the answer (kept: not scratch)
    results/{execution}/metrics.json          merged metrics and the cost estimate
    models/{fingerprint}.fsdm                 a TSV model converted once, reusable
    plans/{fingerprint}-{partitioner}-p{P}-s{seed}-v{rev}.npy   cached partitions

``runs/`` is scratch: cleanup deletes an execution's prefix, and the bucket's lifecycle
rule expires whatever a crashed run left behind. The channels keep their own scratch
under ``scratch/{execution}/`` (fsd_inference.channels.s3), deleted by their teardown
and expired by the same kind of rule. Results live outside both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

RUNS_PREFIX = "runs/"
RESULTS_PREFIX = "results/"
MODELS_PREFIX = "models/"
PLANS_PREFIX = "plans/"
RUN_ID_MAX = 40
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
DIGEST_BYTES = 8
_HASHED = re.compile(rf"-[0-9a-f]{{{2 * DIGEST_BYTES}}}$")


def run_id(execution_name: str) -> str:
    """A short, S3- and SQS-safe id for a Step Functions execution name.

    Deterministic, so every step (and the failure cleanup, which may run before the plan
    returned anything) derives the same id from ``$$.Execution.Name``. Names that are
    already safe and short are kept as they are; others keep a readable head plus a
    64-bit hash of the whole name. The two forms never collide: a kept name never ends
    like a hashed one (``-`` and 16 hex digits; such names are hashed too), so no
    execution can be given an id that addresses another execution's resources.
    """
    if not execution_name:
        raise ValueError("an execution name is required")
    clean = _UNSAFE.sub("-", execution_name)
    if clean == execution_name and len(clean) <= RUN_ID_MAX and not _HASHED.search(clean):
        return clean
    digest = hashlib.blake2b(execution_name.encode(), digest_size=DIGEST_BYTES).hexdigest()
    return f"{clean[:RUN_ID_MAX - len(digest) - 1]}-{digest}"


@dataclass(frozen=True)
class RunLayout:
    execution: str

    @property
    def prefix(self) -> str:
        return f"{RUNS_PREFIX}{self.execution}/"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}run.json"

    def shard(self, worker: int) -> str:
        return f"{self.prefix}shard-{worker}.fsdm"

    def input(self, worker: int) -> str:
        return f"{self.prefix}input-{worker}.fsdm"

    def checkpoint(self, block: int, worker: int) -> str:
        return f"{self.prefix}ckpt/b{block}/w{worker}.fsdm"

    def metrics(self, block: int, worker: int) -> str:
        return f"{self.prefix}metrics/b{block}/w{worker}.json"

    @property
    def results_prefix(self) -> str:
        return f"{RESULTS_PREFIX}{self.execution}/"

    @property
    def categories(self) -> str:
        return f"{self.results_prefix}categories.txt"

    @property
    def metrics_document(self) -> str:
        return f"{self.results_prefix}metrics.json"


def model_key(fingerprint: str) -> str:
    return f"{MODELS_PREFIX}{fingerprint}.fsdm"


def plan_key(name: str) -> str:
    """A cached partition: ``name`` is partition.cache's file name (fingerprint,
    partitioner, P, seed and the cache revision are all in it)."""
    return f"{PLANS_PREFIX}{name}"


def block_range(block: int, layers_per_block: int, depth: int) -> tuple[int, int]:
    """Layers ``(first, last)``, 1-based and inclusive, of ``block`` (0-based)."""
    blocks = -(-depth // layers_per_block)
    if not 0 <= block < blocks:
        raise ValueError(f"block {block} outside 0..{blocks - 1} "
                         f"({depth} layers, {layers_per_block} per block)")
    first = block * layers_per_block + 1
    return first, min(depth, first + layers_per_block - 1)
