"""Logs, metrics and traces of the Lambda functions, with Powertools for AWS Lambda.

- Logger: one JSON object per line on stdout (CloudWatch Logs stores it as is, Logs
  Insights queries its fields), each with the step, the execution (the run id derived
  from the Step Functions execution name) and, for workers, the worker and the block,
  plus the function name and request id when Lambda passes a context.
- Metrics: CloudWatch embedded metric format (EMF): one JSON document on stdout per
  invocation, which CloudWatch turns into metrics with no API call and no added
  latency. Namespace ``FsdInference`` (``POWERTOOLS_METRICS_NAMESPACE``), dimensions
  service and step only: execution names would make a new metric per run (billed per
  metric), so they go into the document's metadata, where Logs Insights finds them.
- Tracer: X-Ray subsegments for the handler and (patched boto3) every S3 / SQS call,
  when the function's tracing is active. Powertools turns it off outside Lambda, under
  ``sam local`` and with ``POWERTOOLS_TRACE_DISABLED=true`` (the embedded local AWS
  sets it: no X-Ray daemon there).

Service name ``fsd-inference`` unless ``POWERTOOLS_SERVICE_NAME`` says otherwise; log
level INFO unless ``POWERTOOLS_LOG_LEVEL`` does.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "fsd-inference"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "FsdInference"
RESULT_LOG_CHARS = 2000  # a result line stays readable; the full documents are in S3

logger = Logger(service=SERVICE, level=os.environ.get("POWERTOOLS_LOG_LEVEL") or "INFO")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

Handler = TypeVar("Handler", bound=Callable[..., dict[str, Any]])
_invocations = 0  # of this process: the first is the cold start
# Lambda runs one invocation per process at a time; tests run several handlers in the
# threads of one process, where the shared metric set must not change while it is
# serialised.
_METRICS_LOCK = threading.Lock()


def event_keys(event: Any) -> dict[str, object]:
    """The execution, worker and block named by an event, for every log line. Only
    well-typed values: a malformed event is the handler's to reject, loudly."""
    if not isinstance(event, dict):
        return {}
    keys: dict[str, object] = {}
    run = event.get("run")
    execution = event.get("execution")
    if execution is None and isinstance(run, dict):
        execution = run.get("execution")
    if isinstance(execution, str):
        keys["execution"] = execution
    for name in ("worker", "block"):
        value = event.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            keys[name] = value
    return keys


def _context_keys(context: Any) -> dict[str, object]:
    if context is None:
        return {}
    names = {"function_name": "function_name", "function_request_id": "aws_request_id",
             "function_memory_size": "memory_limit_in_mb"}
    return {key: getattr(context, attribute) for key, attribute in names.items()
            if getattr(context, attribute, None) not in (None, "")}


def observed(step: str) -> Callable[[Handler], Handler]:
    """Wrap a handler: fresh log keys per invocation, an X-Ray subsegment, its time as
    the ``Seconds`` metric, a JSON log line for its result or its error, and the EMF
    document flushed at the end, also when it fails."""

    def wrap(handler: Handler) -> Handler:
        traced = tracer.capture_lambda_handler(handler)

        @functools.wraps(handler)
        def run(event: Any, context: Any = None) -> dict[str, Any]:
            global _invocations
            _invocations += 1
            logger.clear_state()
            logger.append_keys(step=step, cold_start=_invocations == 1,
                               **_context_keys(context), **event_keys(event))
            with _METRICS_LOCK:
                metrics.clear_metrics()
                metrics.add_dimension("step", step)
            add_metadata(**event_keys(event))
            started = time.perf_counter()
            try:
                result: dict[str, Any] = traced(event, context)
            except Exception as exc:
                logger.exception(f"{step} failed: {type(exc).__name__}: {exc}")
                add_metrics(MetricUnit.Count, Failures=1)
                raise
            else:
                logger.info(f"{step} done", extra={"result": _shorten(result)})
                return result
            finally:
                add_metrics(MetricUnit.Seconds, Seconds=time.perf_counter() - started)
                with _METRICS_LOCK:
                    metrics.flush_metrics()

        return run  # type: ignore[return-value]

    return wrap


def _shorten(result: dict[str, Any]) -> dict[str, Any] | str:
    text = json.dumps(result, sort_keys=True, default=str)
    return result if len(text) <= RESULT_LOG_CHARS else text[:RESULT_LOG_CHARS] + "..."


def add_metrics(unit: MetricUnit, **values: float) -> None:
    """Several metrics of one unit: ``add_metrics(MetricUnit.Count, Workers=8)``."""
    with _METRICS_LOCK:
        for name, value in values.items():
            metrics.add_metric(name, unit, float(value))


def add_metadata(**values: object) -> None:
    """Context for the EMF document that must not become a dimension (high cardinality)."""
    with _METRICS_LOCK:
        for key, value in values.items():
            metrics.add_metadata(key, value)
