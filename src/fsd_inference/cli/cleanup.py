"""``fsd cleanup``: the sweeper, for leftovers of executions that never ran their cleanup.

Stopped or timed-out executions (and failures no Catch sees) skip the state machine's
Cleanup state; on AWS the template's EventBridge rule cleans them up at once. This
command removes whatever is still there after ``--older-than``: see cloud/sweep.py.
"""

from __future__ import annotations

import argparse

from fsd_inference.cli import arguments
from fsd_inference.cli.common import Subparsers, add_command
from fsd_inference.config import AwsConfig


def cmd_cleanup(args: argparse.Namespace) -> int:
    from fsd_inference.cloud.stack import stack_outputs
    from fsd_inference.cloud.sweep import Sweeper

    aws = AwsConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else AwsConfig()
    sweeper = Sweeper(stack_outputs(args.stack, aws), aws)
    swept = sweeper.sweep(args.older_than, dry_run=args.dry_run)
    for item in swept:
        print(item.describe())
    failed = [item for item in swept if item.action.startswith("cleanup failed")]
    print(f"{len(swept)} execution(s) with leftovers in stack {args.stack}"
          f"{' (dry run: nothing deleted)' if args.dry_run else ''}; {len(failed)} failed")
    return 1 if failed else 0


def register(sub: Subparsers) -> None:
    cln = add_command(
        sub, "cleanup", summary="remove queues and scratch of executions that ended without "
                                "their cleanup (stopped, timed out)",
        description="The sweeper. An execution that was stopped, timed out or failed outside "
                    "a Catch never reaches the state machine's Cleanup state (on AWS the "
                    "template's EventBridge rule cleans it up at once). This removes what "
                    "such executions of a stack left behind and is older than --older-than: "
                    "queues (tagged with the stack and execution), runs/ and scratch/ "
                    "prefixes, through each execution's own manifest. Running executions are "
                    "left alone. Results under results/ are kept.",
        examples=["fsd cleanup --stack fsd-inference --dry-run",
                  "fsd cleanup --stack fsd-inference --older-than 30m",
                  "fsd cleanup --stack fsd-local --endpoint-url http://127.0.0.1:5000"])
    cln.add_argument("--stack", required=True, help="the deployed stack (sam deploy)")
    cln.add_argument("--older-than", type=arguments.duration, default=3600.0,
                     help="only leftovers older than this (90s, 30m, 1h, 2d; default 1h)")
    cln.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    cln.add_argument("--endpoint-url", help="the AWS endpoint (default: AWS_ENDPOINT_URL or "
                                            "AWS itself)")
    cln.set_defaults(func=cmd_cleanup)
