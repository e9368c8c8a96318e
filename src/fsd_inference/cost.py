"""Dollars for a run, from its metrics document and a price table kept as data.

The table (``prices.json`` beside this module: one dated section per region, us-east-1
by default and eu-west-1, the published runs' region) is loaded with importlib.resources,
so it ships in the package and a report can name the prices it used.
:func:`estimate_cost` reads the figures a run recorded: Lambda invocations and their
seconds and memory (a cloud run's ``lambda`` section; for a local ``fsd infer``
document, the workers' total time at ``memory_mb``), API calls by kind (SQS billed per
64 KiB, S3 in its two request tiers) and the state transitions the caller counted
(cloud.history.state_transitions), and returns every item with its quantity, unit
price and dollars, so a reader can check the sum.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from typing import Any

from fsd_inference.exceptions import ConfigError

PRICE_FILE = "prices.json"
MB_PER_GB = 1024  # Lambda bills memory in GB of 1,024 MB


@functools.cache
def _price_file() -> dict[str, Any]:
    text = resources.files("fsd_inference").joinpath(PRICE_FILE).read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def price_regions() -> list[str]:
    return sorted(_price_file()["regions"])


def load_prices(region: str | None = None) -> dict[str, Any]:
    """One region's price table (default: the file's default region), with ``region``,
    ``currency`` and ``as_of`` beside the prices."""
    document = _price_file()
    name = region or document["default_region"]
    try:
        section = document["regions"][name]
    except KeyError:
        raise ConfigError(f"no prices for region {name!r}; the table has "
                          f"{', '.join(price_regions())}") from None
    return {"region": name, "currency": document["currency"], **section}


def _item(quantity: float, unit: str, unit_usd: float) -> dict[str, Any]:
    return {"quantity": quantity, "unit": unit, "unit_usd": unit_usd,
            "usd": quantity * unit_usd}


def lambda_usage(document: Mapping[str, Any], memory_mb: int) -> tuple[float, int]:
    """``(GB-seconds, invocations)`` of the run's Lambda functions."""
    section = document.get("lambda")
    if isinstance(section, Mapping) and section:
        gb_seconds = 0.0
        invocations = 0
        for entry in section.values():
            memory = int(entry.get("memory_mb") or 0) or memory_mb
            gb_seconds += float(entry.get("seconds", 0.0)) * memory / MB_PER_GB
            invocations += int(entry.get("invocations", 0))
        return gb_seconds, invocations
    workers = document.get("per_worker", [])
    seconds = sum(float(w.get("total_s", 0.0)) for w in workers)
    return seconds * memory_mb / MB_PER_GB, len(workers)


def api_usage(document: Mapping[str, Any]) -> tuple[Counter[str], Counter[str]]:
    """``(calls, billed)`` by API ("SQS.SendMessageBatch": n), workers and steps together."""
    summary = document.get("summary", {})
    calls: Counter[str] = Counter(summary.get("api_calls", {}))
    calls.update(document.get("api_calls_outside_workers", {}))
    billed: Counter[str] = Counter(summary.get("billed_requests", {}))
    return calls, billed


def estimate_cost(document: Mapping[str, Any], memory_mb: int, arch: str,
                  transitions: int, prices: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The run's cost, item by item (see the module docstring for what is counted)."""
    table = prices or load_prices()
    rates = table["lambda"]["gb_second"]
    if arch not in rates:
        raise ConfigError(f"no Lambda price for architecture {arch!r}; the table has "
                          f"{', '.join(sorted(rates))}")
    if memory_mb <= 0 or transitions < 0:
        raise ConfigError(f"memory_mb must be > 0 and transitions >= 0, got {memory_mb}, "
                          f"{transitions}")
    gb_seconds, invocations = lambda_usage(document, memory_mb)
    calls, billed = api_usage(document)
    s3 = table["s3"]
    tier1_ops = set(s3["tier1_operations"])
    free_ops = set(s3["free_operations"])
    sqs_requests = 0
    tier1 = tier2 = 0
    for api, count in calls.items():
        service, _, operation = api.partition(".")
        if service == "SQS":
            sqs_requests += billed.get(api, count)
        elif service == "S3" and operation not in free_ops:
            if operation in tier1_ops:
                tier1 += count
            else:
                tier2 += count
    items = {
        "lambda_compute": _item(gb_seconds, "GB-second", float(rates[arch])),
        "lambda_requests": _item(invocations, "request", float(table["lambda"]["request"])),
        "sqs_requests": _item(sqs_requests, "request (64 KiB)", float(table["sqs"]["request"])),
        "s3_put_list_requests": _item(tier1, "request", float(s3["tier1_request"])),
        "s3_get_other_requests": _item(tier2, "request", float(s3["tier2_request"])),
        "stepfunctions_transitions": _item(
            transitions, "state transition", float(table["stepfunctions"]["standard_transition"])),
    }
    return {
        "total_usd": sum(item["usd"] for item in items.values()),
        "items": items,
        "arch": arch,
        "memory_mb_default": memory_mb,
        "prices": {"region": table["region"], "currency": table["currency"],
                   "as_of": table["as_of"]},
    }
