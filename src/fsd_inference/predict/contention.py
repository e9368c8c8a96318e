"""Shared resources on one machine: the embedded emulator's server and CPU cores.

On AWS every worker has its own CPU and the services scale, so the task graph's delays
are independent. On the embedded emulator (``fsd run`` locally) every API call goes
through one moto server (one interpreter: ``emulator.server_calls_per_s`` calls per
second at most, measured by bench/calibrate.py emulator) and every worker, the server and
the state machine share the machine's ``host.cores``. A mean-value fixed point accounts
for both: from a predicted makespan, the server's utilisation rho (calls / capacity /
time) inflates every emulated call's latency by 1 / (1 - rho) (an M/M/1 queue), and the
CPU demand (the workers' CPU plus the server's) over the cores available in that time
slows every CPU step by demand / capacity when above 1; the graph is sampled again until
the makespan settles. Only a service model with those two entries is contended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fsd_inference.predict.engine import Simulation
from fsd_inference.predict.params import Latency, ServiceModel

ITERATIONS = 8
MAX_UTILISATION = 0.95
CALL_PREFIXES = ("sqs.", "s3.")


def contended(model: ServiceModel) -> bool:
    return "emulator.server_calls_per_s" in model.values and "host.cores" in model.values


def scaled(model: ServiceModel, latency: float, cpu: float) -> ServiceModel:
    """The model with emulated calls ``latency`` times slower and CPU ``cpu`` times."""
    latencies = {name: (Latency(d.median * latency, d.sigma, d.floor * latency)
                        if name.startswith(CALL_PREFIXES) else d)
                 for name, d in model.latencies.items()}
    values = dict(model.values)
    values["compute.lambda_core_per_host_core"] = (
        model.values["compute.lambda_core_per_host_core"] * cpu)
    return replace(model, latencies=latencies, values=values)


def fixed_point(model: ServiceModel, run: Callable[[ServiceModel], Simulation],
                calls: Callable[[Simulation], float], cpu_seconds: float
                ) -> tuple[Simulation, dict[str, float]]:
    """Sample under contention until the makespan settles; returns the last simulation
    and the factors used. ``calls(sim)``: API calls the run makes in all (exact and
    modelled); ``cpu_seconds``: the workers' CPU on this machine, all of it."""
    capacity = model.value("emulator.server_calls_per_s")
    cores = model.value("host.cores")
    latency_factor = cpu_factor = 1.0
    simulation = run(model)
    for _ in range(ITERATIONS):
        makespan = float(np.mean(simulation.makespan))
        busy = makespan - simulation.before - simulation.after
        total_calls = calls(simulation)
        rho = min(MAX_UTILISATION, total_calls / capacity / max(busy, 1e-9))
        demand = cpu_seconds + total_calls / capacity
        new_latency = 1.0 / (1.0 - rho)
        new_cpu = max(1.0, demand / (cores * max(busy, 1e-9)))
        settled = (abs(new_latency - latency_factor) < 0.02 * latency_factor
                   and abs(new_cpu - cpu_factor) < 0.02 * cpu_factor)
        # damped: half way to the new factors, so the iteration does not oscillate
        latency_factor = (latency_factor + new_latency) / 2
        cpu_factor = (cpu_factor + new_cpu) / 2
        simulation = run(scaled(model, latency_factor, cpu_factor))
        if settled:
            break
    return simulation, {"server_latency_factor": latency_factor, "cpu_factor": cpu_factor}
