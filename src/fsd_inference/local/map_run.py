"""One Distributed Map run on the embedded AWS, with AWS's semantics.

Installed in place of moto's own by local.distributed_map (which says what moto does
and why it is replaced). :class:`MapRun` runs one attempt of a Distributed Map state:

- each item (through ItemSelector, evaluated in the parent with ``$$.Map.Item``) is the
  input of a child execution of its own (local.child_executions): its own name, ARN,
  context (``$$.Execution`` is the child's), history and status, reachable through
  DescribeExecution, GetExecutionHistory, StopExecution and ListExecutions(mapRunArn);
- children run concurrently, at most MaxConcurrency (or MaxConcurrencyPath, read again
  while the run goes on, as UpdateMapRun may change it) at once, every item when it is
  0: the workers of one block wait on each other, so all P run together;
- the Map's output is the children's outputs in item order;
- failed or timed-out children count against the tolerated failure threshold; once it
  is exceeded the Map Run fails at once with ``States.ExceedToleratedFailureThreshold``
  ("The specified tolerated failure threshold was exceeded"), the children still
  running are aborted (their Lambda invocations run on, as on AWS) and the rest never
  start; the Map state's Retry and Catch handle that error;
- a stopped parent aborts its children;
- the DescribeMapRun counters (items and executions: running, succeeded, failed,
  timed out, aborted) follow the children.

The threshold follows AWS's rule: ToleratedFailureCount applies when declared (or when
neither is), ToleratedFailurePercentage when declared, and either one exceeded fails
the run. Which ones a Map declares is noted on its iteration component when moto parses
the state (:data:`TOLERANCE_DECLARED`, set by local.distributed_map).
"""

from __future__ import annotations

import datetime
import threading
import uuid
from typing import Any

from fsd_inference.local.child_executions import ChildExecution, register

EXCEEDED_ERROR = "States.ExceedToleratedFailureThreshold"
EXCEEDED_CAUSE = "The specified tolerated failure threshold was exceeded"
POLL_S = 0.5  # how often a waiting Map Run checks that its parent still runs
TOLERANCE_DECLARED = "_fsd_tolerance_declared"  # (count, percentage) on the component


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    """AWS's timestamp format for ``$$.Execution.StartTime`` (ISO 8601, milliseconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class MapRun:
    """One attempt of a Distributed Map state: its children, counters and verdict."""

    def __init__(self, component: Any, env: Any, eval_input: Any, items: list[Any]) -> None:
        self.env = env
        self.eval_input = eval_input
        self.record = eval_input.map_run_record
        self.program = component._get_iteration_program()
        declared: tuple[bool, bool] = getattr(component, TOLERANCE_DECLARED,
                                                   (False, False))
        self.count_declared, self.percentage_declared = declared
        self.inputs = [self._item_input(index, item) for index, item in enumerate(items)]
        self.outputs: list[Any] = [None] * len(items)
        self.children: list[ChildExecution] = []
        self.failed = 0  # failed or timed out
        self.finished = 0
        self._done = threading.Condition()

    # ------------------------------------------------------------------ items

    def _item_input(self, index: int, item: Any) -> Any:
        """The child's input: ItemSelector (or Parameters) in the parent's context."""
        from moto.stepfunctions.parser.asl.eval.states import ItemData, MapData

        selector = self.eval_input.item_selector or self.eval_input.parameters
        if selector is None:
            return item
        frame = self.env.open_inner_frame()
        try:
            frame.states.context_object.context_object_data["Map"] = MapData(
                Item=ItemData(Index=index, Value=item))
            state_input = self.env.stack[-1]
            frame.states.reset(input_value=state_input)
            frame.stack.append(state_input)
            selector.eval(frame)
            return frame.stack[-1]
        finally:
            self.env.delete_frame(frame)

    # ------------------------------------------------------------------ children

    def _child(self, index: int) -> ChildExecution:
        name = str(uuid.uuid4())
        machine = self.record.map_state_machine_arn
        arn = machine.replace(":stateMachine:", ":execution:", 1) + f":{name}"
        child = ChildExecution(name, arn, machine, self.record.map_run_arn, self.inputs[index])
        register(child)
        return child

    def _child_environment(self, child: ChildExecution) -> Any:
        from moto.stepfunctions.parser.api import (
            ExecutionStartedEventDetails,
            HistoryEventExecutionDataDetails,
            HistoryEventType,
            StateMachineType,
        )
        from moto.stepfunctions.parser.asl.eval.environment import Environment
        from moto.stepfunctions.parser.asl.eval.event.event_manager import (
            EventHistoryContext,
        )
        from moto.stepfunctions.parser.asl.eval.states import ExecutionData, StateMachineData
        from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

        parent = self.env.states.context_object.context_object_data["Execution"]
        machine = child.state_machine_arn
        env = Environment(
            aws_execution_details=self.env.aws_execution_details,
            execution_type=StateMachineType.STANDARD,
            context=_event_details(  # ContextObjectData: the child's own $$
                Execution=ExecutionData(Id=child.execution_arn, Input=child.input_value,
                                        Name=child.name, RoleArn=parent["RoleArn"],
                                        StartTime=_iso(child.start_date)),
                StateMachine=StateMachineData(Id=machine, Name=machine.split(":")[-1])),
            event_history_context=EventHistoryContext.of_program_start(),
            cloud_watch_logging_session=None, activity_store=self.env.activity_store,
            mock_test_case=self.env.mock_test_case)
        env.event_manager.add_event(
            context=env.event_history_context, event_type=HistoryEventType.ExecutionStarted,
            event_details=_event_details(executionStartedEventDetails=(
                ExecutionStartedEventDetails(
                    input=to_json_str(child.input_value),
                    inputDetails=HistoryEventExecutionDataDetails(truncated=False),
                    roleArn=parent["RoleArn"]))),
            update_source_event_id=False)
        return env

    def _run_child(self, index: int, child: ChildExecution) -> None:
        from moto.stepfunctions.parser.asl.eval.program_state import (
            ProgramEnded,
            ProgramError,
            ProgramTimedOut,
        )

        status, output = "FAILED", None
        error: str | None = "States.Runtime"
        cause: str | None = None
        try:
            env = child.env = self._child_environment(child)
            # Running before on_stop, so that a stop from now on reaches the program.
            env.next_state_name = self.program.start_at.start_at_name
            child.on_stop(lambda e, c: env.set_stop(stop_date=_now(), cause=c, error=e))
            if child.status == "RUNNING":  # not aborted before it started
                self.program.eval(env)
            state = env.program_state()
            if isinstance(state, ProgramEnded):
                status, output, error = "SUCCEEDED", env.states.get_input(), None
            elif isinstance(state, ProgramError):
                failure: dict[str, Any] = dict(state.error or {})
                error, cause = failure.get("error"), failure.get("cause")
            elif isinstance(state, ProgramTimedOut):
                status, error = "TIMED_OUT", None
            else:  # ProgramStopped: aborted by the Map Run or StopExecution
                status, error = "ABORTED", None
        except Exception as exc:  # the interpreter itself broke: the child fails
            cause = f"{type(exc).__name__}({exc})"
        recorded = child.finish(status, output, error, cause)
        with self._done:
            self.finished += 1
            counters = (self.record.item_counter, self.record.execution_counter)
            for counter in counters:
                counter.running.offset(-1)
            if not recorded:  # aborted by the run: counted when it was stopped
                pass
            elif status == "SUCCEEDED":
                self.outputs[index] = output
                for counter in counters:
                    counter.succeeded.count()
                    counter.results_written.count()
            elif status == "ABORTED":
                for counter in counters:
                    counter.aborted.count()
            else:
                self.failed += 1
                for counter in counters:
                    (counter.timed_out if status == "TIMED_OUT" else counter.failed).count()
            self._done.notify_all()

    def _start(self, index: int) -> None:
        child = self._child(index)
        self.children.append(child)
        for counter in (self.record.item_counter, self.record.execution_counter):
            counter.total.count()
            counter.running.count()
        threading.Thread(target=self._run_child, args=(index, child), daemon=True,
                         name=f"map-run-child-{index}").start()

    # ------------------------------------------------------------------ the run

    def exceeded(self) -> bool:
        total = len(self.inputs)
        count_rule = self.count_declared or not self.percentage_declared
        by_count = count_rule and self.failed > self.record.tolerated_failure_count
        by_share = (self.percentage_declared and total > 0 and
                    self.failed * 100 > self.record.tolerated_failure_percentage * total)
        return bool(by_count or by_share)

    def _abort_running(self) -> None:
        for child in self.children:
            if child.stop():
                for counter in (self.record.item_counter, self.record.execution_counter):
                    counter.aborted.count()

    def execute(self) -> list[Any]:
        """Run every item; the outputs, or raise the threshold error."""
        with self._done:
            while self.finished < len(self.inputs):
                limit = self.record.max_concurrency or len(self.inputs)
                while len(self.children) < len(self.inputs) and \
                        len(self.children) - self.finished < limit:
                    self._start(len(self.children))
                if self.exceeded():
                    self._abort_running()
                    raise _threshold_exceeded(self.env)
                if not self.env.is_running():  # the parent was stopped: so are its children
                    self._abort_running()
                    return self.outputs
                self._done.wait(POLL_S)
            if self.exceeded():
                raise _threshold_exceeded(self.env)
        return self.outputs


def _threshold_exceeded(env: Any) -> Exception:
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )

    details = ExecutionFailedEventDetails(error=EXCEEDED_ERROR, cause=EXCEEDED_CAUSE)
    return FailureEventException(FailureEvent(
        env=env, error_name=StatesErrorName(
            typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
        event_type=HistoryEventType.MapRunFailed,
        event_details=_event_details(executionFailedEventDetails=details)))


def _event_details(**details: Any) -> Any:
    """One of moto's all-keys TypedDicts (EventDetails, ContextObjectData) with some given."""
    return dict(details)
