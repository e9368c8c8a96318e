"""The sweeper: remove what executions that ended outside a Catch left behind.

A stopped execution (StopExecution, the console's Stop button), one that timed out, or
one that failed with an error no Catch sees (``States.Runtime``,
``States.DataLimitExceeded``) never reaches its Cleanup state. The template's
EventBridge rule sends such status changes to the Cleanup function at once; this
module (``fsd cleanup``) is the same cleanup for whatever is still there later, for a
stack whose rule could not fire (the embedded emulator emits no events) or whose
cleanup failed.

It looks at three kinds of leftovers, each older than a threshold:
- manifests ``runs/{id}/run.json`` of executions that are not RUNNING: the ordinary
  cleanup (cloud.cleanup_step) runs for them, so the manifest decides what goes;
- ``scratch/{id}/`` and ``runs/{id}/`` prefixes without a manifest (a Plan that failed
  before writing it, a straggler's late write);
- queues named ``{QueuePrefix}-...`` and tagged with this stack whose execution has no
  manifest (tags name the execution, see channels.sqs.QueueTransport.tags).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from fsd_inference.aws import QUEUE_GONE_CODES, error_code, sqs_client
from fsd_inference.channels.s3 import SCRATCH_PREFIX
from fsd_inference.channels.sqs import TAG_EXECUTION, TAG_STACK
from fsd_inference.cloud.cleanup_step import CLEANUP_FAILURES, cleanup_step
from fsd_inference.cloud.layout import RUNS_PREFIX, RunLayout
from fsd_inference.cloud.settings import CloudSettings
from fsd_inference.cloud.stack import StackOutputs, stepfunctions_client
from fsd_inference.config import AwsConfig
from fsd_inference.storage import Storage, storage_for

MANIFEST_NAME = "run.json"


@dataclass
class Swept:
    """One execution's leftovers and what was done with them."""

    execution: str  # run id
    age_s: float
    status: str  # the execution's status, or "no manifest"
    action: str = ""
    objects: int = 0
    queues: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.execution}: {self.status}, {self.age_s / 60:.0f} min old: "
                f"{self.action}")


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


class Sweeper:
    """The leftovers of one stack (its bucket, queue prefix and state machine)."""

    def __init__(self, stack: StackOutputs, aws: AwsConfig,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.stack = stack
        self.aws = AwsConfig(endpoint_url=aws.endpoint_url, region=aws.region,
                             bucket=stack.bucket, queue_prefix=stack.queue_prefix,
                             stack=stack.stack_name)
        self.settings = CloudSettings(aws=self.aws)
        self.storage: Storage = storage_for(stack.bucket, self.aws)
        self.sfn = stepfunctions_client(self.aws)
        self.sqs = sqs_client(self.aws)
        self.now = now

    # ------------------------------------------------------------------ finding

    def _status(self, name: str) -> tuple[str, datetime | None]:
        """The execution's status and when it ended (None while running / unknown)."""
        try:
            described = self.sfn.describe_execution(
                executionArn=_execution_arn(self.stack.state_machine_arn, name))
        except ClientError as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return "UNKNOWN", None
            raise
        return str(described["status"]), described.get("stopDate")

    def _prefixes(self, root: str) -> dict[str, datetime]:
        """run id -> the newest object's time, for every ``{root}{id}/`` prefix."""
        newest: dict[str, datetime] = {}
        for key, modified in self.storage.objects(root):
            run = key[len(root):].split("/", 1)[0]
            newest[run] = max(modified, newest.get(run, modified))
        return newest

    def _queues(self) -> Iterator[tuple[str, str, float]]:
        """(url, execution id, created epoch s) of this stack's tagged queues."""
        pages = self.sqs.get_paginator("list_queues").paginate(
            QueueNamePrefix=f"{self.aws.queue_prefix}-")
        for page in pages:
            for url in page.get("QueueUrls", []):
                try:
                    tags = self.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
                    created = self.sqs.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["CreatedTimestamp"])["Attributes"]
                except ClientError as exc:
                    if error_code(exc) in QUEUE_GONE_CODES:
                        continue
                    raise
                if tags.get(TAG_STACK) == self.stack.stack_name and TAG_EXECUTION in tags:
                    yield url, tags[TAG_EXECUTION], float(created["CreatedTimestamp"])

    # ------------------------------------------------------------------ sweeping

    def sweep(self, older_than_s: float, dry_run: bool = False) -> list[Swept]:
        now = self.now()
        found: dict[str, Swept] = {}
        runs = self._prefixes(RUNS_PREFIX)
        manifests = {run for run in runs
                     if self.storage.exists(RunLayout(run).manifest)}
        for run in sorted(manifests):
            name = self.storage.get_json(RunLayout(run).manifest).get("execution_name", run)
            status, ended = self._status(str(name))
            age = (now - (ended or runs[run])).total_seconds()
            swept = found[run] = Swept(run, age, status)
            if status == "RUNNING":
                swept.action = "running: left alone"
            elif age < older_than_s:
                swept.action = "too recent: left alone"
            elif dry_run:
                swept.action = "would run its cleanup"
            else:
                swept.action, swept.objects = self._cleanup(str(name))
        orphans = {run: when for root in (RUNS_PREFIX, f"{SCRATCH_PREFIX}/")
                   for run, when in self._prefixes(root).items() if run not in manifests}
        for run, when in sorted(orphans.items()):
            age = (now - when).total_seconds()
            swept = found.setdefault(run, Swept(run, age, "no manifest"))
            if age < older_than_s:
                swept.action = "too recent: left alone"
                continue
            for prefix in (RunLayout(run).prefix, f"{SCRATCH_PREFIX}/{run}/"):
                swept.objects += 0 if dry_run else self.storage.delete_prefix(prefix)
            swept.action = "would delete its objects" if dry_run else "objects deleted"
        for url, run, created in self._queues():
            if run in manifests:
                continue  # its cleanup (above) owns its queues
            age = now.timestamp() - created
            swept = found.setdefault(run, Swept(run, age, "no manifest"))
            if age < older_than_s:
                swept.action = swept.action or "too recent: left alone"
                continue
            swept.queues.append(url.rsplit("/", 1)[-1])
            if not dry_run:
                self._delete_queue(url)
            swept.action = ("would delete" if dry_run else "deleted") + \
                f" {len(swept.queues)} orphan queue(s)"
        return sorted(found.values(), key=lambda s: s.execution)

    def _cleanup(self, name: str) -> tuple[str, int]:
        try:
            result: dict[str, Any] = cleanup_step(name, settings=self.settings,
                                                  storage=self.storage)
        except CLEANUP_FAILURES as exc:
            return f"cleanup failed: {exc}", 0
        return f"cleaned up ({result['transport']})", int(result["deleted_objects"])

    def _delete_queue(self, url: str) -> None:
        try:
            self.sqs.delete_queue(QueueUrl=url)
        except ClientError as exc:
            if error_code(exc) not in QUEUE_GONE_CODES:
                raise
