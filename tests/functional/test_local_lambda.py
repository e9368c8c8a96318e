"""The local Lambda runtime and the Step Functions fixes, through moto's own APIs.

Functions are created with a small probe package (lambda_probes.py) through the Lambda
API of the embedded server and invoked through it, as Step Functions invokes them; the hook
point tests fail loudly if the pinned moto internals moved.
"""

from __future__ import annotations

import base64
import inspect
import json
import threading
import time
from pathlib import Path
from typing import Any

import lambda_probes as probes
import pytest
from lambda_probes import ROLE, invoke, make_function

from fsd_inference.cloud.stack import stepfunctions_client
from fsd_inference.local import (
    child_executions,
    distributed_map,
    execution_fixes,
    lambda_hook,
    lambda_runtime,
    stepfunctions,
)
from fsd_inference.local.emulator import LocalCloud
from fsd_inference.local.server import PINNED_MOTO


@pytest.fixture(scope="module")
def lambda_api(cloud: LocalCloud) -> Any:
    return probes.lambda_api(cloud.aws)


# ----------------------------------------------------------------------------- hook points


def test_the_hook_points_are_where_the_runtime_expects_them() -> None:
    """Fails loudly when moto is upgraded and its internals moved (pin moto)."""
    import moto
    from moto.awslambda.models import LambdaFunction

    assert moto.__version__ == PINNED_MOTO
    owner = lambda_hook.hook_target()
    assert owner is LambdaFunction
    original = lambda_hook._ORIGINAL or LambdaFunction._invoke_lambda
    assert list(inspect.signature(original).parameters) == ["self", "event"]
    assert "self._invoke_lambda(event=body)" in inspect.getsource(LambdaFunction.invoke)
    stepfunctions.check_hook_points()
    distributed_map.check_hook_points()
    child_executions.check_hook_points()
    execution_fixes.check_hook_points()


def test_invocations_go_to_the_runtime_only_while_it_is_installed(cloud: LocalCloud) -> None:
    from moto.awslambda.models import LambdaFunction

    assert LambdaFunction._invoke_lambda is lambda_hook._routed_invoke_lambda
    with pytest.raises(lambda_runtime.LocalRuntimeError, match="already installed"):
        lambda_hook.install(lambda_runtime.LambdaRuntime(cloud.aws.endpoint_url or ""))


# ----------------------------------------------------------------------------- invocations


def test_a_handler_runs_warm_with_the_function_environment(cloud: LocalCloud,
                                                           lambda_api: Any) -> None:
    name = make_function(lambda_api, "probe.echo", timeout=30, PROBE_VALUE="from-config")
    first, response = invoke(lambda_api, name, {"hello": [1, 2]}, tail=True)
    assert "FunctionError" not in response
    assert first["event"] == {"hello": [1, 2]}
    env = first["env"]
    assert env["AWS_ENDPOINT_URL"] == cloud.aws.endpoint_url
    assert env["PROBE_VALUE"] == "from-config"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert Path(env["TMPDIR"]).is_dir(), "every sandbox has its own /tmp"
    assert 25_000 < first["remaining_ms"] <= 30_000
    logs = base64.b64decode(response["LogResult"]).decode()
    assert "echo called" in logs and "START RequestId" in logs
    second, _ = invoke(lambda_api, name, {})
    assert second["pid"] == first["pid"], "the sandbox is reused (warm)"
    assert cloud.runtime.cold_starts[name] == 1 and cloud.runtime.invocations[name] == 2


def test_a_handler_error_is_lambdas_error_payload(lambda_api: Any) -> None:
    name = make_function(lambda_api, "probe.fail")
    payload, response = invoke(lambda_api, name, {"why": "testing"})
    assert response["FunctionError"] == "Handled"
    assert payload["errorType"] == "ProbeError", "Step Functions matches on the class name"
    assert payload["errorMessage"] == "asked to fail: testing"
    assert any("probe.py" in frame for frame in payload["stackTrace"])


def test_the_function_timeout_kills_and_replaces_the_sandbox(cloud: LocalCloud,
                                                             lambda_api: Any) -> None:
    name = make_function(lambda_api, "probe.sleep", timeout=2)
    warm, _ = invoke(lambda_api, name, {"seconds": 0})
    started = time.monotonic()
    payload, response = invoke(lambda_api, name, {"seconds": 60})
    assert time.monotonic() - started < 10
    assert response["FunctionError"] == "Handled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in payload["errorMessage"]
    assert cloud.runtime.timeouts[name] == 1
    again, _ = invoke(lambda_api, name, {"seconds": 0})
    assert again["pid"] != warm["pid"], "a timed-out sandbox is not reused"


def test_crashes_and_missing_handlers_are_runtime_errors(lambda_api: Any) -> None:
    payload, _ = invoke(lambda_api, make_function(lambda_api, "probe.crash"), {})
    assert payload["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in payload["errorMessage"]
    payload, _ = invoke(lambda_api, make_function(lambda_api, "missing.handler"), {})
    assert payload["errorType"] == "Runtime.ImportModuleError"
    payload, _ = invoke(lambda_api, make_function(lambda_api, "probe.nothing"), {})
    assert payload["errorType"] == "Runtime.HandlerNotFound"


def test_concurrent_invocations_never_wait_for_a_sandbox(lambda_api: Any,
                                                         tmp_path: Path) -> None:
    """All P workers of a Map wait on each other: each needs its own sandbox at once."""
    parties = 8
    name = make_function(lambda_api, "probe.barrier", timeout=60)
    results: list[Any] = [None] * parties

    def call(index: int) -> None:
        results[index] = invoke(lambda_api, name, {"folder": str(tmp_path), "index": index,
                                                   "parties": parties, "timeout": 45})[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all("pid" in r for r in results), results
    assert len({r["pid"] for r in results}) == parties


def test_a_hook_sees_every_invocation_and_can_fail_it(cloud: LocalCloud,
                                                      lambda_api: Any) -> None:
    name = make_function(lambda_api, "probe.echo")
    seen: list[Any] = []

    def hook(invocation: lambda_runtime.Invocation) -> dict[str, Any] | None:
        seen.append(invocation.event)
        if invocation.event.get("fail"):
            return {"errorType": "InjectedError", "errorMessage": "injected"}
        return None

    with cloud.runtime.hooked(hook):
        ok, _ = invoke(lambda_api, name, {"fail": False})
        failed, response = invoke(lambda_api, name, {"fail": True})
    invoke(lambda_api, name, {"after": True})
    assert "pid" in ok and response["FunctionError"] == "Handled"
    assert failed["errorType"] == "InjectedError"
    assert seen == [{"fail": False}, {"fail": True}]


# ----------------------------------------------------------------------------- Step Functions


def _map_with_a_timing_out_iteration(function_arn: str) -> str:
    return json.dumps({
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Slow",
                    "States": {"Slow": {
                        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": function_arn, "Payload": {"seconds": 3}},
                        "TimeoutSeconds": 1, "End": True}}},
                "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error",
                           "Next": "Caught"}],
                "Next": "Missed"},
            "Caught": {"Type": "Succeed"},
            "Missed": {"Type": "Fail", "Error": "NotCaught"},
        }})


def test_a_states_error_in_a_map_iteration_reaches_the_maps_catch(cloud: LocalCloud,
                                                                  lambda_api: Any) -> None:
    name = make_function(lambda_api, "probe.sleep", timeout=10)
    function_arn = probes.function_arn(lambda_api, name)
    sfn = stepfunctions_client(cloud.aws)
    machine = sfn.create_state_machine(name="map-timeout", roleArn=ROLE,
                                       definition=_map_with_a_timing_out_iteration(
                                           function_arn))["stateMachineArn"]
    with execution_fixes.unpatched_error_names():
        broken = probes.run_execution(sfn, machine, "moto-as-released", {"items": [1, 2]})
    assert broken["status"] == "FAILED" and broken["error"] == "States.Runtime", (
        "moto no longer turns States.* iteration errors into States.Runtime: the local "
        "patch in fsd_inference.local.execution_fixes may go")
    assert probes.run_execution(sfn, machine, "patched", {"items": [1, 2]})["status"] == \
        "SUCCEEDED"


def test_definitions_are_substituted_and_normalised_for_moto() -> None:
    definition = '{"A": "${Fn}", "B": {"ToleratedFailurePercentage": 0, "N": 1}}'
    text = stepfunctions.normalise_for_moto(stepfunctions.substitute(
        definition, {"Fn": "arn:aws:lambda:us-east-1:1:function:f"}))
    assert json.loads(text) == {"A": "arn:aws:lambda:us-east-1:1:function:f",
                                "B": {"ToleratedFailurePercentage": 0.0, "N": 1}}
    assert '"ToleratedFailurePercentage": 0.0' in text


def test_a_fail_state_passes_on_a_caught_states_error(cloud: LocalCloud) -> None:
    """The failure path after a Distributed Map re-raises the Map's error by ErrorPath."""
    sfn = stepfunctions_client(cloud.aws)
    definition = {"StartAt": "Raise", "States": {"Raise": {
        "Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}}}
    machine = sfn.create_state_machine(name="rethrow", roleArn=ROLE,
                                       definition=json.dumps(definition))["stateMachineArn"]
    caught = {"error": {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "why"}}
    with execution_fixes.unpatched_error_names():
        broken = probes.run_execution(sfn, machine, "rethrow-moto", caught)
    assert broken["status"] == "FAILED" and broken["error"] == "States.Runtime", (
        "moto now lets a Fail state name a States.* error: the local patch in "
        "fsd_inference.local.execution_fixes may go")
    failed = probes.run_execution(sfn, machine, "rethrow-patched", caught)
    assert (failed["status"], failed["error"], failed["cause"]) == \
        ("FAILED", "States.ExceedToleratedFailureThreshold", "why")


def test_executions_without_a_name_get_one(cloud: LocalCloud) -> None:
    """StartExecution's name is optional (the README's aws CLI examples omit it)."""
    sfn = stepfunctions_client(cloud.aws)
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    machine = sfn.create_state_machine(name="unnamed", roleArn=ROLE,
                                       definition=json.dumps(definition))["stateMachineArn"]
    with execution_fixes.unpatched_execution_names():
        first = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        # A running execution of the same name and input is StartExecution's idempotent
        # case (no error, on AWS too): the bug shows once the first one has ended.
        deadline = time.monotonic() + 30
        while sfn.describe_execution(executionArn=first)["status"] == "RUNNING":
            assert time.monotonic() < deadline, "a one-state execution never ended"
            time.sleep(0.05)
        with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
            sfn.start_execution(stateMachineArn=machine, input="{}")
    arns = {sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
            for _ in range(2)}
    assert len(arns) == 2 and not any(arn.endswith(":None") for arn in arns)


def _stopped_while_a_map_runs(sfn: Any, machine: str, name: str) -> tuple[str, str]:
    """(status right after StopExecution, status once its iterations ended)."""
    arn = sfn.start_execution(stateMachineArn=machine, name=name,
                              input=json.dumps({"items": [0, 1]}))["executionArn"]
    time.sleep(1.0)
    sfn.stop_execution(executionArn=arn)
    at_once = sfn.describe_execution(executionArn=arn)["status"]
    time.sleep(5.0)  # the iterations end (failing) after their 3 s
    return at_once, sfn.describe_execution(executionArn=arn)["status"]


def test_a_stopped_execution_is_aborted_at_once_and_stays_so(cloud: LocalCloud,
                                                             lambda_api: Any) -> None:
    """Stopped during an inline Map whose iterations then fail and are caught."""
    function_arn = probes.function_arn(lambda_api, make_function(lambda_api, "probe.stamp"))
    sfn = stepfunctions_client(cloud.aws)
    definition = {"StartAt": "Fan", "States": {
        "Fan": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Slow",
                    "States": {"Slow": {
                        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": function_arn,
                                       "Payload": {"seconds": 3, "fail": True}},
                        "End": True}}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": True},
        "Caught": {"Type": "Succeed"}}}
    machine = sfn.create_state_machine(name="stopped", roleArn=ROLE,
                                       definition=json.dumps(definition))["stateMachineArn"]
    with execution_fixes.unpatched_stops():
        broken = _stopped_while_a_map_runs(sfn, machine, "stopped-moto")
    assert broken == ("RUNNING", "FAILED"), (
        f"moto now stops executions as AWS does ({broken}): the local patch in "
        f"fsd_inference.local.execution_fixes may go")
    assert _stopped_while_a_map_runs(sfn, machine, "stopped-patched") == \
        ("ABORTED", "ABORTED")
