"""The service model's parameters: a dated JSON file in which every figure names its source.

A parameter is either a plain value (``{"value": 1769, "unit": "MB", ...}``) or a
latency distribution given by its median and one upper quantile (``{"p50": 0.016,
"p90": 0.034, ...}``, seconds), which :class:`Latency` turns into a lognormal. Every
entry carries ``source`` (where the figure comes from: a URL, a paper, a measurement
script) and ``checked`` (the ISO date the figure was taken or last checked); a fitted
entry says so (``"fitted": true``) and why. Loading refuses a file that breaks any of
this, naming the file and the entry, so no figure enters a prediction unsourced.

Two files ship with the package (``PROFILES``): ``aws`` (public figures for AWS, next
to prices.json) and the embedded emulator's, which ``bench/calibrate_emulator.py``
measures and rewrites. ``--service FILE`` takes any other file of the same form.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fsd_inference.exceptions import FsdError

PROFILES: dict[str, str] = {"aws": "aws-model.json", "emulator": "emulator-model.json"}
T = TypeVar("T")
Z90 = 1.2815515655446004  # standard normal quantiles
Z99 = 2.3263478740408408


class ParameterError(FsdError):
    """A service-model file is unusable; names the file and the entry."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Latency:
    """A lognormal delay (seconds) above an optional floor: ``floor + median * e^(sigma Z)``.

    Lognormal because request latencies are positive with a long right tail; two
    published quantiles fix it. The floor keeps a physical minimum (a round trip).
    """

    median: float
    sigma: float
    floor: float = 0.0

    @classmethod
    def from_quantiles(cls, p50: float, p90: float | None = None, p99: float | None = None,
                       floor: float = 0.0) -> Latency:
        if p50 <= 0:
            raise ValueError("p50 must be > 0")
        if p90 is not None:
            sigma = math.log(p90 / p50) / Z90
        elif p99 is not None:
            sigma = math.log(p99 / p50) / Z99
        else:
            sigma = 0.0
        if sigma < 0:
            raise ValueError("the upper quantile is below the median")
        return cls(p50, sigma, floor)

    @property
    def mean(self) -> float:
        return self.floor + self.median * math.exp(self.sigma ** 2 / 2)

    def quantile(self, z: float) -> float:
        return self.floor + self.median * math.exp(self.sigma * z)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.sigma == 0:
            return np.full(shape, self.floor + self.median)
        return self.floor + self.median * np.exp(self.sigma * rng.standard_normal(shape))

    def total(self, rng: np.random.Generator, counts: np.ndarray, draws: int) -> np.ndarray:
        """``(draws, n)`` sums of ``counts[i]`` independent delays each.

        One draw per cell, spread as a sum of k independent delays spreads (the mean
        grows by k, the deviation by sqrt(k)): exact for k <= 1, a good approximation
        above, and it keeps the cost independent of the counts.
        """
        counts = np.asarray(counts, dtype=np.float64)
        one = self.sample(rng, (draws, counts.size))
        if counts.size and counts.max() <= 1:
            return np.asarray(one * counts)
        mean = self.mean
        spread = np.sqrt(counts) * (one - mean)
        return np.asarray(np.maximum(counts * mean + spread, counts * self.floor))


@dataclass(frozen=True)
class ServiceModel:
    """A loaded parameter file: values, latencies, and where each came from."""

    name: str
    path: str
    checked: str
    values: Mapping[str, float]
    latencies: Mapping[str, Latency]
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def value(self, key: str) -> float:
        return self._lookup(self.values, "value", key)

    def latency(self, key: str) -> Latency:
        return self._lookup(self.latencies, "latency", key)

    def _lookup(self, table: Mapping[str, T], kind: str, key: str) -> T:
        try:
            return table[key]
        except KeyError:
            raise ParameterError(self.path, f"no {kind} {key!r} (the service model "
                                            f"{self.name!r} lacks it)") from None

    def client_cpu(self, api: str, calls: np.ndarray | float = 1.0,
                   payload: np.ndarray | float = 0.0) -> np.ndarray:
        """CPU seconds (on this machine) the caller spends in the SDK for ``calls`` calls
        of ``api`` carrying ``payload`` bytes in all (bench/calibrate.py sdk)."""
        return np.asarray(calls * self.value(f"sdk.{api}.cpu_s")
                          + payload * self.value(f"sdk.{api}.cpu_s_per_byte"))

    def fitted(self) -> dict[str, Mapping[str, Any]]:
        """The entries fitted to measurements rather than taken from a source."""
        return {k: e for k, e in self.entries.items() if e.get("fitted")}

    def describe(self) -> dict[str, Any]:
        """Every figure with its source, for a prediction's document."""
        return {"name": self.name, "file": self.path, "checked": self.checked,
                "parameters": {k: dict(e) for k, e in sorted(self.entries.items())}}


def _date(where: str, text: object) -> str:
    if not isinstance(text, str):
        raise ParameterError(where, f"'checked' must be an ISO date, got {text!r}")
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ParameterError(where, f"'checked' must be an ISO date, got {text!r}") from None
    return text


def _number(where: str, entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParameterError(where, f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_model(document: Any, path: str) -> ServiceModel:
    """Validate a parameter document (see the module docstring) and build the model."""
    if not isinstance(document, dict) or not isinstance(document.get("parameters"), dict):
        raise ParameterError(path, "expected an object with a 'parameters' object")
    checked = _date(path, document.get("checked"))
    values: dict[str, float] = {}
    latencies: dict[str, Latency] = {}
    for key, entry in document["parameters"].items():
        where = f"{path}: parameter {key!r}"
        if not isinstance(entry, dict):
            raise ParameterError(where, "must be an object")
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ParameterError(where, "names no source")
        _date(where, entry.get("checked"))
        if entry.get("fitted") and not str(entry.get("justification", "")).strip():
            raise ParameterError(where, "is fitted but gives no justification")
        value = _number(where, entry, "value")
        p50 = _number(where, entry, "p50")
        if (value is None) == (p50 is None):
            raise ParameterError(where, "needs exactly one of 'value' or 'p50'")
        if value is not None:
            values[key] = value
            continue
        assert p50 is not None
        try:
            latencies[key] = Latency.from_quantiles(
                p50, _number(where, entry, "p90"), _number(where, entry, "p99"),
                _number(where, entry, "floor") or 0.0)
        except ValueError as exc:
            raise ParameterError(where, str(exc)) from exc
    return ServiceModel(str(document.get("name") or Path(path).stem), path, checked, values,
                        latencies, document["parameters"])


@functools.cache
def _packaged(filename: str) -> ServiceModel:
    resource = resources.files("fsd_inference").joinpath(filename)
    return parse_model(json.loads(resource.read_text(encoding="utf-8")), filename)


def load_service_model(name_or_path: str | Path = "aws") -> ServiceModel:
    """A packaged profile by name (``aws``, ``emulator``) or a parameter file by path."""
    if isinstance(name_or_path, str) and name_or_path in PROFILES:
        return _packaged(PROFILES[name_or_path])
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(str(path), f"cannot read the service model: "
                                        f"{exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ParameterError(str(path), f"not JSON: {exc}") from exc
    return parse_model(document, str(path))
