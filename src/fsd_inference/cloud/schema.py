"""The one schema of everything that crosses a function boundary, declared once.

The execution's input (the Plan request), the ``run`` state the state machine carries,
and the events of the four functions are msgspec Structs: field types, bounds and
patterns live here, and :func:`load` is the one loader every handler uses. msgspec
rejects unknown fields, wrong types (``True`` is not an integer, ``"8"`` is not a
number) and out-of-range values with a message that names the path (``$.run.workers``);
:func:`load` turns that into the project's own error, so a bad event is one line
naming the field, never a raw exception.

Why msgspec rather than pydantic: the same declarative validation at about a tenth of
the installed size (every Lambda package carries it, and the Plan function's package is
already close to Lambda's 250 MB limit), with strict types by default.

Bounds that depend on the deployment (``workers`` against MaxWorkers, the bucket the
functions may use) are checked where the settings are known (plan_step.parse_request,
:func:`check_bucket`); everything else is bounded here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec

from fsd_inference.exceptions import ConfigError

# Step Functions execution names: 1 to 80 characters (what cloud.layout.run_id maps to
# a short, safe id). Control characters are refused outright.
EXECUTION_NAME_MAX = 80
# The largest P the template allows (MaxWorkers' MaxValue); the deployment's own
# MaxWorkers is checked on top of it.
MAX_WORKERS = 1000
MAX_DEPTH = 100_000  # layers (the deepest Graph Challenge network has 1,920)
MAX_INDEX = 2**31 - 1  # neurons, rows: what the readers accept
MAX_SEED = 2**32 - 1
MIN_MESSAGE_LIMIT = 1024
MAX_MESSAGE_LIMIT = 1024 * 1024
MAX_RECEIVE_TIMEOUT_S = 120.0  # below the ASL's 150 s block retry (tests/unit/test_template)
KEY_MAX = 1024  # S3's key length limit

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
# An S3 key a step may read: no leading "/", no "." or ".." segment (keys are also
# local file names in the functions' scratch folder), no control characters.
KEY_PATTERN = r"^(?!/)(?!.*(?:^|/)\.{1,2}(?:/|$))[^\x00-\x1f\x7f]+$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

ExecutionName = Annotated[str, msgspec.Meta(min_length=1, max_length=EXECUTION_NAME_MAX,
                                            pattern=r"^[^\x00-\x1f\x7f]+$")]
RunId = Annotated[str, msgspec.Meta(pattern=RUN_ID_PATTERN)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=KEY_MAX, pattern=KEY_PATTERN)]
BucketName = Annotated[str, msgspec.Meta(pattern=BUCKET_PATTERN)]
Fingerprint = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
Workers = Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)]
Depth = Annotated[int, msgspec.Meta(ge=1, le=MAX_DEPTH)]
Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
Index = Annotated[int, msgspec.Meta(ge=0, le=MAX_DEPTH)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)]
MessageLimit = Annotated[int, msgspec.Meta(ge=MIN_MESSAGE_LIMIT, le=MAX_MESSAGE_LIMIT)]
ReceiveTimeout = Annotated[float, msgspec.Meta(ge=1.0, le=MAX_RECEIVE_TIMEOUT_S)]

T = TypeVar("T")
_PATH = re.compile(r" - at `\$((?:\.[A-Za-z_]\w*|\[\d+\])*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_POST_INIT = re.compile(r"^([a-z_]+) must ")  # require_finite and __post_init__ messages


class SchemaError(ConfigError):
    """An event or state does not follow the schema; ``field`` is the dotted path to
    what is wrong ('' for the whole value). Its class name is the Step Functions error."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _field_of(message: str) -> tuple[str, str]:
    """``("run.workers", "Expected `int` >= 1")`` from a msgspec message."""
    path = _PATH.search(message)
    where = path.group(1).lstrip(".") if path else ""
    text = message[:path.start()] if path else message
    for pattern in (_UNKNOWN, _MISSING, _POST_INIT):
        named = pattern.search(text)
        if named:
            where = f"{where}.{named.group(1)}" if where else named.group(1)
            break
    return where, text


def load(kind: type[T], data: Any, what: str,
         error: Callable[[str, str], Exception] | None = None) -> T:
    """``data`` as a ``kind``, or ``error(field, message)`` naming what is wrong.

    ``what`` names the value in messages ("the worker event", "the request"); the
    default error is :class:`SchemaError`.
    """
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        field, text = _field_of(str(exc))
        if error is not None:
            raise error(field, text) from exc
        where = f"{what}'s {field!r}" if field else what
        raise SchemaError(field, f"{where}: {text}") from exc


def require_finite(name: str, value: float | None) -> None:
    """For ``__post_init__``: NaN and infinities are not numbers a run can use."""
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_bucket(name: str, allowed: str | None, what: str) -> None:
    """A state may only point at the deployment's own bucket (when one is configured)."""
    if allowed is not None and name != allowed:
        raise SchemaError("bucket", f"{what} names bucket {name!r}, but this deployment's "
                                    f"bucket is {allowed!r}")


def to_builtins(value: Any) -> Any:
    """JSON-safe dicts and lists of a Struct (for state payloads and manifests)."""
    return msgspec.to_builtins(value)
