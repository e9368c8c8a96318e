"""``sam local`` against ``fsd emulator``: what SAM CLI hands a function container.

SAM CLI gives a local function only the environment variables the template declares,
each from (highest first) ``--env-vars`` overrides, the shell, the template's value.
So the emulator's exports reach the functions only because template.yaml declares
``AWS_ENDPOINT_URL`` (and ``FSD_BUCKET``). This runs SAM CLI's own resolution (the
installed aws-sam-cli) on the real template; Docker is not needed for that part.
"""

from __future__ import annotations

import json
from pathlib import Path

from samcli.commands._utils.template import get_template_data
from samcli.lib.providers.provider import Stack
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.local.lambdafn.env_vars import EnvironmentVariables

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SHELL = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "FSD_BUCKET": "fsd-local",
         "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def resolved(path: Path) -> dict[str, dict[str, str]]:
    """Each function's container environment as ``sam local invoke`` builds it."""
    stack = Stack("", "", str(path), {}, get_template_data(str(path)))
    environments = {}
    for function in SamFunctionProvider([stack]).get_all():
        variables = (function.environment or {}).get("Variables", {})
        environments[function.name] = EnvironmentVariables(
            function.name, function.memory, function.timeout, function.handler,
            variables=variables, shell_env_values=SHELL, override_values={}).resolve()
    return environments


def test_the_emulator_exports_reach_every_function() -> None:
    environments = resolved(TEMPLATE)
    assert set(environments) == {"PlanFunction", "WorkerFunction", "GatherFunction",
                                 "CleanupFunction"}
    for name, environment in environments.items():
        assert environment["AWS_ENDPOINT_URL"] == SHELL["AWS_ENDPOINT_URL"], name
        assert environment["FSD_BUCKET"] == "fsd-local", name


def test_without_the_declaration_the_endpoint_would_not_reach_them(tmp_path: Path) -> None:
    """Why the template declares it: SAM drops shell variables a template does not name."""
    template = get_template_data(str(TEMPLATE))
    del template["Globals"]["Function"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"]
    stripped = tmp_path / "template.json"
    stripped.write_text(json.dumps(template))
    for name, environment in resolved(stripped).items():
        assert "AWS_ENDPOINT_URL" not in environment, name
