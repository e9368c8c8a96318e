"""The SAM template and the ASL definition: consistent with each other and with the code.

Static checks (targets exist, placeholders match substitutions, every Task retries and
every failure reaches cleanup, error names are real exception classes, the history
arithmetic counts the states that exist), then the template through cfn-lint and,
where it is installed, ``sam validate --lint``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from fsd_inference.channels.s3 import SCRATCH_PREFIX
from fsd_inference.cloud import errors, history, settings
from fsd_inference.cloud.layout import RUNS_PREFIX
from fsd_inference.cloud.schema import MAX_RECEIVE_TIMEOUT_S
from fsd_inference.config import ENV_BUCKET, ENV_QUEUE_PREFIX, ENV_STACK

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "statemachine" / "inference.asl.json"
LINT_TIMEOUT_S = 300
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException",
                 "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
BUILTIN_ERROR_PREFIXES = ("States.", "Lambda.", "Sandbox.")


# ----------------------------------------------------------------------------- loading


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: ``!Ref X`` -> ``{"Ref": "X"}`` etc."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return loaded


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASL.read_text())
    return loaded


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def scopes(states: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``States`` object: the top level and each Map's ItemProcessor."""
    yield path or "top", states
    for name, state in states.items():
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from scopes(processor["States"], f"{path}{name}/")


def all_states(asl: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for scope, states in scopes(asl["States"]):
        for name, state in states.items():
            yield scope, name, state


def targets(state: dict[str, Any]) -> list[str]:
    found = [state[k] for k in ("Next", "Default") if k in state]
    found += [choice["Next"] for choice in state.get("Choices", [])]
    found += [catch["Next"] for catch in state.get("Catch", [])]
    return found


def error_names(asl: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for _, _, state in all_states(asl):
        for rule in state.get("Retry", []) + state.get("Catch", []):
            names.update(rule["ErrorEquals"])
    return names


# ----------------------------------------------------------------------------- the ASL


def test_every_transition_target_exists_and_every_state_is_reachable(asl: dict[str, Any]
                                                                      ) -> None:
    for scope, states in scopes(asl["States"]):
        start = asl["StartAt"] if scope == "top" else None
        if start is not None:
            assert start in states
        for name, state in states.items():
            for target in targets(state):
                assert target in states, f"{scope}/{name} -> {target!r}: no such state"
            terminal = state["Type"] in ("Succeed", "Fail") or state.get("End") is True
            assert terminal or targets(state), f"{scope}/{name} leads nowhere"
    seen, todo = set(), [asl["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(targets(asl["States"][name]))
    assert seen == set(asl["States"]), f"unreachable: {set(asl['States']) - seen}"


def test_placeholders_and_substitutions_match(asl: dict[str, Any], template: dict[str, Any]
                                              ) -> None:
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", ASL.read_text()))
    (machine,) = resources_of(template, "AWS::Serverless::StateMachine").values()
    provided = set(machine["Properties"]["DefinitionSubstitutions"])
    assert used == provided, (f"placeholders without substitution: {used - provided}; "
                              f"substitutions never used: {provided - used}")
    assert "arn:aws" not in ASL.read_text(), "no literal ARNs in the ASL: use placeholders"


def test_every_task_retries_lambda_errors_and_every_failure_reaches_cleanup(
        asl: dict[str, Any]) -> None:
    top = asl["States"]
    for scope, name, state in all_states(asl):
        if state["Type"] == "Task":
            retried = {e for rule in state.get("Retry", []) for e in rule["ErrorEquals"]}
            missing = LAMBDA_ERRORS - retried
            assert not missing, f"{scope}/{name} does not retry {missing}"
            for rule in state["Retry"]:
                assert rule.get("BackoffRate", 1.0) >= 1.0 and rule["MaxAttempts"] >= 1
        if scope != "top" or state["Type"] not in ("Task", "Map"):
            continue
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert catch["ResultPath"].startswith("$."), f"{name}: the Catch must keep the state"
        if name == "CleanupAfterFailure":
            assert top[catch["Next"]]["Type"] == "Fail"
        else:
            assert catch["Next"] == "CleanupAfterFailure", name
            assert catch["ResultPath"] == "$.error", name
    # Tasks inside a Map iteration are covered by their Map's Catch (checked above), and
    # every Map also retries a failed block as a whole.
    for name, state in top.items():
        if state["Type"] == "Map":
            assert state["Retry"], f"{name} must retry a transiently failed block"
    cleanup = top["CleanupAfterFailure"]
    assert top[cleanup["Next"]]["Type"] == "Fail"
    for name, state in top.items():
        if state["Type"] == "Fail":
            assert "CausePath" in state or "Cause" in state, f"{name}: no readable cause"


def test_custom_error_names_are_exception_classes(asl: dict[str, Any]) -> None:
    """A Lambda error's name is the raising class's name: the ASL must name real ones."""
    custom = {n for n in error_names(asl) if not n.startswith(BUILTIN_ERROR_PREFIXES)}
    assert custom, "the block retry names the workers' retryable error"
    for name in custom:
        cls = getattr(errors, name, None)
        assert isinstance(cls, type) and issubclass(cls, Exception), name
    assert set(errors.RETRYABLE_BLOCK_ERRORS) <= custom


def test_block_retry_waits_out_the_failed_attempt(asl: dict[str, Any]) -> None:
    """A retried block starts only after the failed attempt's workers gave up waiting
    (receive timeout), so no stale worker competes for the new attempt's messages."""
    for name in history.MAP_STATES.values():
        for rule in asl["States"][name]["Retry"]:
            assert rule["IntervalSeconds"] >= MAX_RECEIVE_TIMEOUT_S + 20, name


def test_maps_run_every_worker_of_a_block_at_once(asl: dict[str, Any]) -> None:
    inline = asl["States"][history.MAP_STATES["inline"]]
    distributed = asl["States"][history.MAP_STATES["distributed"]]
    assert inline["MaxConcurrency"] == 0
    assert inline["ItemProcessor"]["ProcessorConfig"]["Mode"] == "INLINE"
    assert distributed["MaxConcurrencyPath"] == "$.run.workers"
    config = distributed["ItemProcessor"]["ProcessorConfig"]
    assert config == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    for state in (inline, distributed):
        assert state["ItemsPath"] == "$.items"
        assert state["ResultPath"] is None, "worker results must not grow the state"
        assert set(state["ItemSelector"]) == {"run.$", "block.$", "worker.$"}
    route = asl["States"]["RouteBlock"]
    assert route["Choices"][0]["StringEquals"] == "distributed"


def test_history_arithmetic_counts_the_states_that_exist(asl: dict[str, Any]) -> None:
    states = asl["States"]
    for name in history.FIXED_TASKS:
        assert states[name]["Type"] == "Task"
    assert [states[n]["Type"] for n in history.PER_BLOCK_STATES] == ["Choice", "Pass", "Choice"]
    assert states[history.SUCCEED_STATE]["Type"] == "Succeed"
    for mode, name in history.MAP_STATES.items():
        assert states[name]["Type"] == "Map"
        inner = states[name]["ItemProcessor"]["States"]
        assert len(inner) == 1 and next(iter(inner.values()))["Type"] == "Task", mode
        assert states[name]["Next"] == "NextBlock"
    assert history.WORKER_TASK in states[history.MAP_STATES["inline"]]["ItemProcessor"]["States"]
    # The success path visits exactly the counted states: Plan, the block loop, Gather,
    # Cleanup, Done.
    path, name = [], asl["StartAt"]
    while states[name]["Type"] != "Succeed":
        path.append(name)
        state = states[name]
        name = state["Default"] if state["Type"] == "Choice" else state["Next"]
        if name in path:  # the loop back to RouteBlock: leave it through MoreBlocks' Default
            name = states["MoreBlocks"]["Default"]
    assert path == ["Plan", "RouteBlock", "InlineBlock", "NextBlock", "MoreBlocks", "Gather",
                    "Cleanup"]


def test_history_limit_arithmetic() -> None:
    assert history.history_events(62, 120, "inline") == 53_299 > history.HISTORY_LIMIT
    assert history.history_events(62, 6, "inline") == 2_683
    assert history.history_events(62, 6, "distributed") == 91
    assert history.history_events(40, 6, "inline") == 1_759
    assert history.min_layers_per_block(1920, 40, "inline") == 29
    assert history.history_events(40, -(-1920 // 29), "inline") <= history.HISTORY_BUDGET
    assert history.min_layers_per_block(120, 62, "inline") < settings.DEFAULT_LAYERS_PER_BLOCK
    assert history.state_transitions(8, 6) == 4 + 6 * (4 + 8)


# ----------------------------------------------------------------------------- the template


def test_functions_exist_and_their_handlers_import(template: dict[str, Any]) -> None:
    functions = resources_of(template, "AWS::Serverless::Function")
    assert set(functions) == {"PlanFunction", "WorkerFunction", "GatherFunction",
                              "CleanupFunction"}
    (machine,) = resources_of(template, "AWS::Serverless::StateMachine").values()
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    referenced = {v["Fn::GetAtt"][0] for k, v in substitutions.items() if k.endswith("Arn")}
    assert referenced == set(functions)
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"]
               for p in machine["Properties"]["Policies"] if "LambdaInvokePolicy" in p}
    assert invoked == set(functions)
    for name, function in functions.items():
        module, _, attribute = function["Properties"]["Handler"].rpartition(".")
        assert module.startswith("fsd_inference.handlers."), name
        assert callable(getattr(importlib.import_module(module), attribute)), name


def test_runtime_architecture_and_build_agree(template: dict[str, Any]) -> None:
    glob = template["Globals"]["Function"]
    assert glob["CodeUri"] == "src/"
    makefile = (ROOT / "src" / "Makefile").read_text()
    runtime_version = glob["Runtime"].removeprefix("python")
    assert f"LAMBDA_PYTHON ?= {runtime_version}\n" in makefile
    (arch,) = glob["Architectures"]
    assert glob["Environment"]["Variables"][settings.ENV_LAMBDA_ARCH] == arch
    assert f"LAMBDA_ARCH   ?= {'aarch64' if arch == 'arm64' else arch}\n" in makefile
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        assert function["Metadata"]["BuildMethod"] == "makefile", name
        assert f"build-{name}" in makefile, f"src/Makefile has no build-{name} target"


def test_requirements_pin_the_tested_versions() -> None:
    """What Lambda gets is what the tests ran with, and satisfies pyproject's ranges."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ranges = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}

    def pins(name: str) -> dict[str, str]:
        found = {}
        for line in (ROOT / "src" / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-r"):
                requirement = Requirement(line)
                (spec,) = requirement.specifier
                assert spec.operator == "==", f"{name}: pin {line} exactly"
                found[requirement.name] = spec.version
        return found

    common, plan_only = pins("requirements.txt"), pins("requirements-plan.txt")
    assert set(common) == {"numpy", "scipy", "zstandard", "msgspec", "aws-lambda-powertools",
                           "jmespath", "typing-extensions", "aws-xray-sdk", "wrapt"}
    assert set(plan_only) == {"mtkahypar"}
    assert "-r requirements.txt" in (ROOT / "src" / "requirements-plan.txt").read_text()
    for package, version in {**common, **plan_only}.items():
        assert metadata.version(package) == version, f"{package}: tests run another version"
        if package in ranges:
            assert ranges[package].specifier.contains(version), package


def test_parameters_and_environment_match_the_code(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    assert {"WorkerMemory", "MaxWorkers", "MessageLimit", "QueuePrefix",
            "LayersPerBlock"} <= set(parameters)
    assert parameters["LayersPerBlock"]["Default"] == settings.DEFAULT_LAYERS_PER_BLOCK
    assert parameters["MaxWorkers"]["Default"] == settings.DEFAULT_MAX_WORKERS
    assert parameters["WorkerMemory"]["Default"] == settings.DEFAULT_WORKER_MEMORY_MB
    assert sorted(parameters["MessageLimit"]["AllowedValues"]) == [262144, 1048576]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env[ENV_BUCKET] == {"Ref": "Bucket"}
    assert env[ENV_QUEUE_PREFIX] == template["Outputs"]["QueuePrefix"]["Value"]
    assert env[ENV_STACK] == {"Ref": "AWS::StackName"}
    assert env[settings.ENV_WORKER_MEMORY] == {"Ref": "WorkerMemory"}
    plan_env = template["Resources"]["PlanFunction"]["Properties"]["Environment"]["Variables"]
    assert plan_env == {settings.ENV_MAX_WORKERS: {"Ref": "MaxWorkers"},
                        settings.ENV_MESSAGE_LIMIT: {"Ref": "MessageLimit"},
                        settings.ENV_LAYERS_PER_BLOCK: {"Ref": "LayersPerBlock"}}
    outputs = template["Outputs"]
    assert {"BucketName", "StateMachineArn", "PlanFunctionName", "WorkerFunctionName",
            "GatherFunctionName", "CleanupFunctionName", "QueuePrefix"} <= set(outputs)


def test_bucket_is_private_encrypted_tls_only_and_expires_scratch(template: dict[str, Any]
                                                                  ) -> None:
    bucket = template["Resources"]["Bucket"]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rules = bucket["LifecycleConfiguration"]["Rules"]
    expiring = {r["Prefix"] for r in rules if "ExpirationInDays" in r}
    assert expiring == {RUNS_PREFIX, f"{SCRATCH_PREFIX}/"}
    assert any("AbortIncompleteMultipartUpload" in r and "Prefix" not in r for r in rules)
    policy = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _statements(function: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in function["Properties"].get("Policies", []):
        if "Statement" in policy:
            yield from policy["Statement"]


QUEUE_ARN = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${Prefix}-*"
# What each function may do in the bucket: (action, key pattern) pairs.
S3_ACCESS = {
    "PlanFunction": {("s3:GetObject", "*"), ("s3:PutObject", "runs/*"),
                     ("s3:PutObject", "plans/*"), ("s3:PutObject", "models/*")},
    "WorkerFunction": {("s3:GetObject", "runs/*"), ("s3:GetObject", "scratch/*"),
                       ("s3:PutObject", "scratch/*"), ("s3:PutObject", "runs/*/ckpt/*"),
                       ("s3:PutObject", "runs/*/metrics/*"), ("s3:DeleteObject", "scratch/*"),
                       ("s3:DeleteObject", "runs/*/ckpt/*"),
                       ("s3:DeleteObject", "runs/*/metrics/*")},
    "GatherFunction": {("s3:GetObject", "*"), ("s3:PutObject", "results/*")},
    "CleanupFunction": {("s3:GetObject", "runs/*"), ("s3:DeleteObject", "runs/*"),
                        ("s3:DeleteObject", "scratch/*")},
}


def _key_pattern(resource: Any) -> str:
    text = resource["Fn::Sub"]
    assert text.startswith("${Bucket.Arn}/"), text
    return str(text.removeprefix("${Bucket.Arn}/"))


def test_permissions_are_scoped(template: dict[str, Any]) -> None:
    """S3 split by prefix (workers write only scratch, checkpoints and metrics; only Plan
    writes runs/, plans/ and models/; only Gather results/; nobody but Cleanup deletes
    run scratch), SQS only on the stack's queue prefix."""
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        policies = function["Properties"]["Policies"]
        assert all(set(p) == {"Statement"} for p in policies), f"{name}: no SAM S3 templates"
        s3: set[tuple[str, str]] = set()
        for statement in _statements(function):
            actions = statement["Action"]
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            if all(a.startswith("sqs:") for a in actions):
                assert resources == [{"Fn::Sub": [QUEUE_ARN, {"Prefix": {"Fn::If": [
                    "HasQueuePrefix", {"Ref": "QueuePrefix"},
                    template["Outputs"]["QueuePrefix"]["Value"]["Fn::If"][2]]}}]}], name
            elif actions == ["s3:ListBucket"]:
                assert resources == [{"Fn::GetAtt": ["Bucket", "Arn"]}], name
            else:
                assert all(a.startswith("s3:") for a in actions), name
                s3 |= {(a, _key_pattern(r)) for a in actions for r in resources}
        assert s3 == S3_ACCESS[name], name
    worker = {a for st in _statements(template["Resources"]["WorkerFunction"])
              for a in st["Action"]}
    assert not worker & {"sqs:CreateQueue", "sqs:DeleteQueue"}, "workers only exchange"
    machine = template["Resources"]["StateMachine"]["Properties"]
    (execution_policy,) = [p["StepFunctionsExecutionPolicy"] for p in machine["Policies"]
                           if "StepFunctionsExecutionPolicy" in p]
    assert execution_policy["StateMachineName"] == machine["Name"]
    assert machine["Type"] == "STANDARD"
    assert machine["DefinitionUri"] == "statemachine/inference.asl.json"


def test_logs_tracing_and_the_cleanup_rule(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in resources_of(template, "AWS::Serverless::Function"):
        group = resources[f"{name.removesuffix('Function')}LogGroup"]["Properties"]
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{name}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert template["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    machine = resources["StateMachine"]["Properties"]
    assert machine["Logging"]["IncludeExecutionData"] is False
    assert machine["Logging"]["Level"] == {"Ref": "StateMachineLogLevel"}
    assert "Tracing" in machine
    rule = resources["CleanupFunction"]["Properties"]["Events"]["ExecutionEnded"]
    pattern = rule["Properties"]["Pattern"]
    assert set(pattern["detail"]["status"]) == {"ABORTED", "TIMED_OUT", "FAILED"}
    template_text = rule["Properties"]["InputTransformer"]["InputTemplate"]
    assert json.loads(template_text.replace("<name>", '"x"').replace("<status>", '"ABORTED"')
                      ) == {"execution": "x", "status": "ABORTED"}
    assert template["Parameters"]["QueuePrefix"]["Default"] == ""


def test_every_checkov_skip_is_justified(template: dict[str, Any]) -> None:
    skips = [(name, skip) for name, resource in template["Resources"].items()
             for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), name
        assert len(skip.get("comment", "").split()) >= 8, f"{name} {skip['id']}: say why"


def test_samconfig_deploys_the_stack() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert config["default"]["global"]["parameters"]["stack_name"] == "fsd-inference"
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True


def test_every_function_has_sample_events(template: dict[str, Any]) -> None:
    names = {p.name for p in (ROOT / "events").glob("*.json")}
    for function in resources_of(template, "AWS::Serverless::Function"):
        prefix = function.removesuffix("Function").lower() + "_"
        assert any(n.startswith(prefix) for n in names), f"no events/{prefix}*.json"
    for name in names:
        json.loads((ROOT / "events" / name).read_text())


# ----------------------------------------------------------------------------- linters


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def _offline_env() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1"}


def test_cfn_lint_passes() -> None:
    pytest.importorskip("cfnlint", reason="cfn-lint is a dev dependency (pip install -e .[dev])")
    tool = _tool("cfn-lint")
    assert tool, "cfn-lint is importable but its command is missing"
    done = subprocess.run([tool, "--format", "parseable", str(TEMPLATE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=LINT_TIMEOUT_S,
                          env=_offline_env(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sam_validate_lint_passes() -> None:
    tool = _tool("sam")
    if tool is None:
        pytest.skip("aws-sam-cli is not installed (a dev dependency: pip install -e .[dev])")
    done = subprocess.run([tool, "validate", "--lint", "--template", str(TEMPLATE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=LINT_TIMEOUT_S,
                          env=_offline_env(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid SAM Template" in done.stdout + done.stderr
