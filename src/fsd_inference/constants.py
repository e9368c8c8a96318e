"""Limits, defaults and environment variable names, in one place."""

from __future__ import annotations

# Graph Challenge rules (https://graphchallenge.mit.edu, sparse DNN).
ACTIVATION_CAP = 32.0
DEFAULT_BIAS_BY_NEURONS: dict[int, float] = {
    1024: -0.3,
    4096: -0.35,
    16384: -0.4,
    65536: -0.45,
}
# RadiX-Net style generator: every neuron has this many in- and out-edges per layer.
EDGES_PER_NEURON = 32
GENERATED_WEIGHT = 1.0 / 16.0

# Arithmetic. float64 is the default: it is the closest to the exact arithmetic that
# defines the Graph Challenge answer (float32 flips rows whose activation lands within
# rounding of zero), at twice the bytes per exchanged value.
DTYPES = ("float64", "float32")
DEFAULT_DTYPE = "float64"

# Where the shipped sample input lives, relative to the repository root.
SAMPLE_INPUT_NAME = "mnist-1024-first10k.tsv.gz"
MNIST_IMAGE_SIDE = 32

# Environment variables.
ENV_CACHE_DIR = "FSD_CACHE_DIR"
ENV_THREADS = "FSD_THREADS"  # threads of the layer kernel (default: the CPUs available)
ENV_KERNEL = "FSD_KERNEL"  # auto | fused | scipy
ENV_KERNEL_LIBRARY = "FSD_KERNEL_LIBRARY"  # another build of libfsdkernel.so
ENV_HEAP = "FSD_HEAP"  # retain (default: keep freed memory for the next layer) | os

# Row parts (micro-batches, strategy/shape.py) a run may cut its rows into: the worker
# loop keys every message by (layer, part), and a pipeline streams parts between stages.
MAX_PARTS = 1024

# Following an execution (app.follow): give up after this long without any progress. A
# block attempt is silent while its workers run: up to a Lambda timeout (900 s) plus the
# ASL's retry interval (150 s).
STALL_TIMEOUT_S = 1200.0

# fsd emulator: the usual port of a local AWS, and the stack it deploys (its bucket is
# named after it, which events/ rely on).
EMULATOR_PORT = 4566
EMULATOR_STACK = "fsd-local"

# What the planner ranks plans by (fsd plan --objective, a request's "objective")
OBJECTIVES = ("cost", "latency")
