"""Functional-test fixtures: one embedded moto server on loopback for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fsd_inference.config import AwsConfig
from fsd_inference.local import local_aws
from fsd_inference.local.emulator import LocalCloud, local_serverless


@pytest.fixture(scope="session")
def aws() -> Iterator[AwsConfig]:
    """A real moto server (HTTP on 127.0.0.1), not an in-process mock: workers in other
    processes reach it exactly as they would reach AWS."""
    with local_aws() as config:
        yield config


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    """The embedded serverless AWS (moto, the local Lambda runtime, executing Step
    Functions), one per test module that asks for it."""
    with local_serverless() as local:
        yield local
