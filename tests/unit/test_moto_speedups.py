"""local.server.speed_up_moto hooks the pinned moto where it measured: each hook point
still exists and the cached answers equal what moto computes itself."""

from __future__ import annotations

import inspect

from fsd_inference.local.server import speed_up_moto


def test_the_speed_ups_hook_the_pinned_moto_and_answer_the_same() -> None:
    from moto import backends
    from moto.core import responses
    from moto.sqs.models import SQSBackend
    from moto.sqs.responses import SQSResponse

    assert speed_up_moto()
    assert speed_up_moto()  # idempotent
    methods = responses.method_names_from_class  # type: ignore[attr-defined]
    assert hasattr(methods, "cache_info") and hasattr(backends.list_of_moto_modules,
                                                      "cache_info")
    expected = [name for name, _ in inspect.getmembers(SQSResponse, inspect.isfunction)]
    assert methods(SQSResponse) == expected and "send_message_batch" in expected
    assert SQSBackend.is_message_valid_based_on_retention_period.__name__ == \
        "valid_by_retention"
