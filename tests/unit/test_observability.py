"""The handlers' Powertools logs and EMF metrics, read from a handler's real stdout.

Each case runs a handler in a fresh Python process, as Lambda does, and reads what it
printed: Powertools writes the JSON log lines and the EMF document to stdout, and
CloudWatch Logs takes stdout line by line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from fsd_inference.handlers.observability import event_keys

# The handler's call, then its outcome on stderr (stdout is the function's log).
DRIVER = textwrap.dedent("""
    import json, sys
    from fsd_inference.handlers import {module}
    try:
        {module}.handler(json.loads(sys.argv[1]))
    except Exception as exc:
        print(type(exc).__name__, file=sys.stderr)
""")


def invoke(module: str, event: Any, **environment: str) -> tuple[list[dict[str, Any]], str]:
    """(the JSON lines the handler printed, the name of the error it raised)."""
    env = {**os.environ, "FSD_BUCKET": "no-such-bucket", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", **environment}
    done = subprocess.run([sys.executable, "-c", DRIVER.format(module=module),
                           json.dumps(event)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    return parsed, done.stderr.strip()


def logs(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "level" in line]


def emf(lines: list[dict[str, Any]]) -> dict[str, Any]:
    documents = [line for line in lines if "_aws" in line]
    assert len(documents) == 1, lines
    return documents[0]


def test_a_failing_plan_logs_json_with_the_execution_and_emits_its_metrics() -> None:
    lines, error = invoke("plan", {"execution": "exec-obs-1", "request": {"workers": 2}})
    assert error == "RequestError"
    (log,) = logs(lines)
    assert log["level"] == "ERROR" and log["execution"] == "exec-obs-1"
    assert log["step"] == "plan" and log["service"] == "fsd-inference"
    assert "request field 'model'" in log["message"] and log["exception_name"] == "RequestError"
    document = emf(lines)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "FsdInference"
    assert sorted(directive["Dimensions"][0]) == ["service", "step"]
    names = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert names == {"Failures": "Count", "Seconds": "Seconds"}
    assert document["Failures"] == [1.0] and document["step"] == "plan"
    assert document["execution"] == "exec-obs-1"  # metadata, not a dimension


def test_worker_lines_name_the_worker_and_block() -> None:
    run = {"execution": "exec-obs-2", "bucket": "no-such-bucket", "workers": 2}
    lines, error = invoke("worker", {"run": run, "block": 1, "worker": 1})
    assert error  # the run payload is incomplete: the handler rejects it
    (log,) = logs(lines)
    assert (log["execution"], log["worker"], log["block"], log["step"]) == (
        "exec-obs-2", 1, 1, "worker")
    assert emf(lines)["worker"] == 1


def test_service_and_namespace_follow_the_powertools_variables() -> None:
    lines, _ = invoke("cleanup", {"execution": 7, "state": "not an object"},
                      POWERTOOLS_SERVICE_NAME="my-fsd", POWERTOOLS_METRICS_NAMESPACE="MyNs")
    (log,) = logs(lines)
    assert log["service"] == "my-fsd" and "execution" not in log  # 7 is not a name
    assert emf(lines)["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "MyNs"


@pytest.mark.parametrize(("event", "keys"), [
    ({"execution": "e", "request": {}}, {"execution": "e"}),
    ({"run": {"execution": "r"}, "block": 2, "worker": 0}, {"execution": "r", "block": 2,
                                                            "worker": 0}),
    ({"run": {"execution": 3}, "block": True, "worker": "1"}, {}),
    ([1, 2], {}),
    (None, {}),
])
def test_event_keys_take_only_well_typed_values(event: Any, keys: dict[str, Any]) -> None:
    assert event_keys(event) == keys
