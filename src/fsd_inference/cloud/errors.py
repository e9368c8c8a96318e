"""Errors of the serverless steps. Their class names are Step Functions error names.

A Lambda function that raises reports ``errorType = type(exc).__name__``, and the state
machine matches Retry and Catch rules on that string. So these names are part of the
contract with statemachine/inference.asl.json (a test checks that every custom error
name the ASL mentions is a class here): rename one and the ASL must follow.
"""

from __future__ import annotations

from fsd_inference.exceptions import ConfigError, FsdError
from fsd_inference.storage.base import StorageError

__all__ = ["BlockDeadlineError", "RequestError", "RetryableBlockError", "RunCancelled",
           "StorageError"]


class RequestError(ConfigError):
    """The execution's input cannot be run; names the field and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"request field {field!r}: {message}")


class RetryableBlockError(FsdError):
    """A worker lost its block to something transient (a peer that timed out, a dropped
    connection): the state machine reruns the whole block from its checkpoint."""

    def __init__(self, worker: int, block: int, message: str) -> None:
        self.worker = worker
        self.block = block
        super().__init__(f"worker {worker}, block {block}: {message}")


class BlockDeadlineError(FsdError):
    """A block would not finish inside the Lambda timeout. Not retried: rerunning the same
    layers takes as long again; the fix is a smaller layers_per_block."""

    def __init__(self, worker: int, block: int, layer: int, message: str) -> None:
        self.worker = worker
        self.block = block
        self.layer = layer
        super().__init__(f"worker {worker}, block {block}, layer {layer}: {message}")


class RunCancelled(FsdError):
    """The execution was cleaned up (another worker failed) while this worker ran."""


# The names the ASL's Retry rules use for a block that may succeed when rerun.
RETRYABLE_BLOCK_ERRORS = (RetryableBlockError.__name__,)
