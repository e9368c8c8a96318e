"""Deploy template.yaml into the embedded moto server, the way ``sam deploy`` does.

1. package (what ``sam package`` does): zip every ``CodeUri`` folder, upload the zips
   and the ``DefinitionUri`` file to an artifacts bucket, rewrite both to ``s3://``;
2. transform: aws-sam-translator turns the SAM template into plain CloudFormation
   (functions, roles, the bucket, the state machine with its DefinitionSubstitutions);
3. deploy: CreateStack through moto's CloudFormation API, wait for CREATE_COMPLETE,
   and read the stack's outputs, as ``fsd run --stack`` does on AWS.

What moto does not do with the result, and how it is made up for (see LOCAL-AWS.md):
its StateMachine resource ignores the definition file and the substitutions, so
local.stepfunctions patches its CloudFormation handler; the functions run through
local.lambda_runtime. moto has no ``AWS::S3::BucketPolicy`` (the TLS-only policy is
skipped locally, with its warning silenced) and enforces no IAM.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsd_inference.cloud.stack import StackOutputs, cloudformation_client, stack_outputs
from fsd_inference.config import DEFAULT_REGION, ENV_DEFAULT_REGION, AwsConfig
from fsd_inference.exceptions import ConfigError, FsdError
from fsd_inference.local.server import create_bucket, patched_environ

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPOSITORY = Path(__file__).resolve().parents[3]
TEMPLATE_NAME = "template.yaml"
ARTIFACTS_BUCKET = "fsd-sam-artifacts"
DEPLOY_TIMEOUT_S = 120.0
SKIPPED_IN_ZIP = {"__pycache__", ".mypy_cache", ".pytest_cache"}
UNSUPPORTED_BY_MOTO = ("AWS::S3::BucketPolicy",)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same code makes the same zip


class DeployError(FsdError):
    """The stack could not be created; names the stack and what failed."""


@dataclass(frozen=True)
class Deployed:
    stack_name: str
    outputs: StackOutputs
    seconds: float


# ----------------------------------------------------------------------------- template


def load_template(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path} not found: deploying the application needs the "
                          f"repository's {TEMPLATE_NAME}, statemachine/ and src/")
    from samtranslator.yaml_helper import yaml_parse  # CloudFormation's short forms too

    template: dict[str, Any] = yaml_parse(path.read_text(encoding="utf-8"))
    return template


# ----------------------------------------------------------------------------- package


def _code_files(folder: Path) -> list[Path]:
    """The files of a code folder, without bytecode caches and hidden folders (tool
    caches, and src/.zig: the C compiler src/Makefile fetches for ``sam build``, 19,500
    files that made a local deploy take 14 s instead of 1)."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_IN_ZIP
                         and not d.startswith(".")]
        found += [Path(directory) / f for f in files if not f.endswith(".pyc")]
    return sorted(found)


def zip_folder(folder: Path) -> bytes:
    """A deterministic zip of a code folder (see _code_files), as Lambda expects."""
    if not folder.is_dir():
        raise ConfigError(f"CodeUri {folder} is not a folder")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _code_files(folder):
            relative = path.relative_to(folder)
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(relative.as_posix(), _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def package(template: dict[str, Any], root: Path, s3: S3Client, bucket: str,
            prefix: str) -> dict[str, Any]:
    """Upload code and definitions, point the template at them (``sam package``)."""
    uploaded: dict[Path, str] = {}

    def upload(path: Path, data: bytes) -> str:
        if path not in uploaded:
            key = f"{prefix}{path.relative_to(root).as_posix().strip('/') or 'root'}"
            key += ".zip" if path.is_dir() else ""
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            uploaded[path] = f"s3://{bucket}/{key}"
        return uploaded[path]

    def code(properties: dict[str, Any]) -> None:
        uri = properties.get("CodeUri")
        if isinstance(uri, str) and not uri.startswith("s3://"):
            properties["CodeUri"] = upload(root / uri, zip_folder(root / uri))

    code(template.get("Globals", {}).get("Function", {}))
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function":
            code(properties)
        if resource.get("Type") == "AWS::Serverless::StateMachine":
            uri = properties.get("DefinitionUri")
            if isinstance(uri, str) and not uri.startswith("s3://"):
                properties["DefinitionUri"] = upload(root / uri, (root / uri).read_bytes())
    return template


class _NoManagedPolicies:
    """The translator's managed-policy loader, for templates that name none by name."""

    def load(self) -> dict[str, str]:
        raise DeployError("the template names an AWS managed policy by name: the local "
                          "deployment cannot look those up")


def translate(template: dict[str, Any], parameters: Mapping[str, Any],
              region: str = DEFAULT_REGION) -> dict[str, Any]:
    """SAM -> CloudFormation with aws-sam-translator (what CloudFormation's transform
    does), in ``region`` (the translator reads it from boto3's default session)."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    try:
        with patched_environ({ENV_DEFAULT_REGION: region, "AWS_REGION": region}):
            translated: dict[str, Any] = transform(template, dict(parameters),
                                                   _NoManagedPolicies())
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise DeployError(f"{TEMPLATE_NAME} does not transform: {causes}") from exc
    return translated


# ----------------------------------------------------------------------------- deploy


def _quiet_unsupported() -> None:
    """moto warns once per deployment about resources it skips; these are expected."""
    for kind in UNSUPPORTED_BY_MOTO:
        warnings.filterwarnings("ignore", message=f"Tried to parse {kind}")

    class Skip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(kind in record.getMessage() for kind in UNSUPPORTED_BY_MOTO)

    logger = logging.getLogger("moto")
    if not any(type(f).__name__ == "Skip" for f in logger.filters):
        logger.addFilter(Skip())


def _failure(cfn: Any, stack_name: str, status: str, reason: str) -> DeployError:
    events = cfn.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
              for e in events if e.get("ResourceStatus", "").endswith("FAILED")]
    details = "; ".join(failed[:5]) or reason or "no reason given"
    return DeployError(f"stack {stack_name}: {status}: {details}")


def name_bucket(template: dict[str, Any], bucket_name: str) -> None:
    """Give the template's one bucket a fixed name (CloudFormation would generate one)."""
    buckets = [r for r in template.get("Resources", {}).values()
               if r.get("Type") == "AWS::S3::Bucket"]
    if len(buckets) != 1:
        raise DeployError(f"cannot name the bucket {bucket_name}: the template has "
                          f"{len(buckets)} buckets, not one")
    buckets[0].setdefault("Properties", {})["BucketName"] = bucket_name


def deploy_stack(stack_name: str, aws: AwsConfig, parameters: Mapping[str, Any] | None = None,
                 root: Path = REPOSITORY, timeout_s: float = DEPLOY_TIMEOUT_S,
                 bucket_name: str | None = None) -> Deployed:
    """Package, transform and create ``stack_name``; returns its outputs.

    ``bucket_name`` names the stack's bucket (``fsd emulator`` does, so that the sample
    events in events/ name the right one); by default CloudFormation's rule applies.
    """
    from fsd_inference.aws import s3_client

    started = time.perf_counter()
    _quiet_unsupported()
    template = load_template(root / TEMPLATE_NAME)
    s3 = s3_client(aws)
    create_bucket(aws, ARTIFACTS_BUCKET)
    package(template, root, s3, ARTIFACTS_BUCKET, f"{stack_name}/")
    translated = translate(template, parameters or {}, aws.region)
    if bucket_name is not None:
        name_bucket(translated, bucket_name)
    cfn = cloudformation_client(aws)
    cfn.create_stack(
        StackName=stack_name, TemplateBody=json.dumps(translated),
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)}
                    for k, v in (parameters or {}).items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
    deadline = time.monotonic() + timeout_s
    while True:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if not status.endswith("IN_PROGRESS"):
            raise _failure(cfn, stack_name, status, stack.get("StackStatusReason", ""))
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name}: still {status} after {timeout_s:g} s")
        time.sleep(0.2)
    return Deployed(stack_name, stack_outputs(stack_name, aws, cfn),
                    time.perf_counter() - started)
