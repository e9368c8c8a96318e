"""moto's Step Functions made to run this application's state machine (moto 5.2.5 only).

Five local changes, each checked against the pinned moto (``check_hook_points``, and a
test that fails loudly if one moved):

1. Executing backend. moto only interprets ASL when ``execute_state_machine`` is on
   (moto.core.config); :func:`executing_step_functions` turns it on for a block. The
   interpreter then calls Lambda at ``localhost:$MOTO_PORT``, which local_aws() sets.
2. State machines from CloudFormation. moto's ``AWS::StepFunctions::StateMachine``
   lands in the *non-executing* backend, reads only ``DefinitionString`` and never
   applies ``DefinitionSubstitutions``, so what SAM makes of ``DefinitionUri`` (a
   ``DefinitionS3Location``) becomes an empty machine. :func:`patch_cloudformation`
   makes CloudFormation read the definition (string, object or S3 location), apply
   the substitutions, and create (and delete) the machine in the executing backend.
3. Executions as on AWS (local.execution_fixes): ``States.*`` error names that come from
   data reach Retry, Catch and the execution's error; an execution started without a
   name gets a UUID; a stopped execution is ABORTED at once and stays so.
4. Distributed Maps: moto runs their items inline and ignores failures;
   local.distributed_map runs each item as a child execution (local.map_run,
   local.child_executions) with AWS's concurrency, output and tolerated-failure
   semantics. :func:`prepare` installs it.
5. History in pages (local.history_pages): GetExecutionHistory honours ``maxResults``,
   ``nextToken`` and ``reverseOrder`` as on AWS, so a follower reads only new events.

And one grammar gap: moto's ASL parser accepts ``ToleratedFailurePercentage`` only as
a decimal (``0.0``), not as the integer ``0`` that AWS accepts, so definitions created
through CloudFormation here are normalised (:func:`normalise_for_moto`: same numbers,
written as decimals) before moto parses them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsd_inference.local.lambda_runtime import LocalRuntimeError

_PATCH_LOCK = threading.Lock()
_ORIGINALS: dict[str, Any] = {}


# ----------------------------------------------------------------------------- 1. execution


@contextmanager
def executing_step_functions() -> Iterator[None]:
    """Executions interpret their ASL for the block (moto's own switch)."""
    from moto.core.config import default_user_config

    section = default_user_config.setdefault("stepfunctions", {})
    before = section.get("execute_state_machine", False)
    section["execute_state_machine"] = True
    try:
        yield
    finally:
        section["execute_state_machine"] = before


def executing_backend(account_id: str, region: str) -> Any:
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    return stepfunctions_parser_backends[account_id][region]


# ----------------------------------------------------------------------------- 2. CloudFormation


def substitute(definition: str, substitutions: dict[str, Any]) -> str:
    """``${Name}`` -> value, as CloudFormation applies DefinitionSubstitutions."""
    for name, value in substitutions.items():
        text = value if isinstance(value, str) else json.dumps(value)
        definition = definition.replace("${" + name + "}", text)
    return definition


DECIMAL_ONLY_FIELDS = ("ToleratedFailurePercentage",)


def normalise_for_moto(definition: str) -> str:
    """Integer values of DECIMAL_ONLY_FIELDS rewritten as decimals (same value)."""
    try:
        document = json.loads(definition)
    except ValueError:
        return definition  # moto's parser reports what is wrong with it

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: float(value) if key in DECIMAL_ONLY_FIELDS and isinstance(value, int)
                    and not isinstance(value, bool) else walk(value)
                    for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return json.dumps(walk(document))


def _definition(properties: dict[str, Any], account_id: str, partition: str) -> str:
    if "DefinitionString" in properties:
        text = str(properties["DefinitionString"])
    elif "Definition" in properties:
        text = json.dumps(properties["Definition"])
    elif "DefinitionS3Location" in properties:
        from moto.s3.models import s3_backends

        location = properties["DefinitionS3Location"]
        key = s3_backends[account_id][partition].get_object(location["Bucket"],
                                                            location["Key"])
        if key is None:
            raise LocalRuntimeError(f"state machine definition s3://{location['Bucket']}/"
                                    f"{location['Key']} does not exist")
        text = key.value.decode("utf-8")
    else:
        raise LocalRuntimeError("the state machine resource has no definition")
    return normalise_for_moto(substitute(text, properties.get("DefinitionSubstitutions") or {}))


def _create_state_machine(cls: Any, /, resource_name: str, cloudformation_json: Any,
                          account_id: str, region_name: str, **_: Any) -> Any:
    from moto.stepfunctions.utils import cfn_to_api_tags
    from moto.utilities.utils import get_partition

    properties = cloudformation_json["Properties"]
    definition = _definition(properties, account_id, get_partition(region_name))
    backend = executing_backend(account_id, region_name)
    return backend.create_state_machine(
        properties.get("StateMachineName", resource_name), definition,
        properties.get("RoleArn", ""), tags=cfn_to_api_tags(properties.get("Tags", [])),
        sm_type=properties.get("StateMachineType"))


def _delete_state_machine(cls: Any, /, resource_name: str, cloudformation_json: Any,
                          account_id: str, region_name: str) -> None:
    executing_backend(account_id, region_name).delete_state_machine(resource_name)


def patch_cloudformation() -> None:
    """CloudFormation state machines: definition read, substituted, executable."""
    from moto.stepfunctions.models import StateMachine

    with _PATCH_LOCK:
        if "cfn_create" in _ORIGINALS:
            return
        _ORIGINALS["cfn_create"] = StateMachine.__dict__["create_from_cloudformation_json"]
        _ORIGINALS["cfn_delete"] = StateMachine.__dict__["delete_from_cloudformation_json"]
        setattr(StateMachine, "create_from_cloudformation_json",  # noqa: B010
                classmethod(_create_state_machine))
        setattr(StateMachine, "delete_from_cloudformation_json",  # noqa: B010
                classmethod(_delete_state_machine))


# ----------------------------------------------------------------------------- checks


def check_hook_points() -> None:
    """Fail loudly if the pinned moto internals these patches rely on moved."""
    from moto.core.config import default_user_config
    from moto.stepfunctions.models import StateMachine

    problems = []
    if "execute_state_machine" not in default_user_config.get("stepfunctions", {}):
        problems.append("moto.core.config has no stepfunctions.execute_state_machine")
    for name in ("create_from_cloudformation_json", "delete_from_cloudformation_json"):
        method = _ORIGINALS.get("cfn_" + name.split("_")[0]) or StateMachine.__dict__.get(name)
        if not isinstance(method, classmethod):
            problems.append(f"StateMachine.{name} is not a classmethod")
    if problems:
        raise LocalRuntimeError("moto's Step Functions internals moved: " + "; ".join(problems))


def prepare() -> None:
    """Check and apply the patches (idempotent), the Distributed Map's included."""
    from fsd_inference.local import (
        child_executions,
        distributed_map,
        execution_fixes,
        history_pages,
    )

    check_hook_points()
    execution_fixes.check_hook_points()
    child_executions.check_hook_points()
    distributed_map.check_hook_points()
    history_pages.check_hook_points()
    patch_cloudformation()
    execution_fixes.patch()
    child_executions.install()
    distributed_map.patch()
    history_pages.install()
