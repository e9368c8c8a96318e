"""Lambda entry points, one module per function: parse the event, call the cloud step.

Each ``handler(event, context)`` is an adapter over :mod:`fsd_inference.cloud`; nothing
algorithmic lives here. An exception propagates to the Lambda runtime on purpose: its
class name becomes the Step Functions error name that the state machine's Retry and
Catch rules match (see cloud/errors.py).
"""
