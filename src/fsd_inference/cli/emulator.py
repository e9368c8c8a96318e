"""``fsd emulator``: the embedded local AWS with the stack deployed, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from fsd_inference.cli import arguments
from fsd_inference.cli.common import Subparsers, add_command, say
from fsd_inference.config import DEFAULT_REGION
from fsd_inference.constants import EMULATOR_PORT, EMULATOR_STACK

DEFAULT_HOST = "127.0.0.1"


def cmd_emulator(args: argparse.Namespace) -> int:
    from fsd_inference.app.emulator import EmulatorOptions, serve

    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, on_signal)
    options = EmulatorOptions(host=args.host, port=args.port, stack=args.stack,
                              region=args.region, demo=args.demo,
                              env_file=Path(args.env_file) if args.env_file else None)
    serve(options, stop, say, out=lambda line: print(line, flush=True))
    say("fsd emulator: stopped")
    return 0


def register(sub: Subparsers) -> None:
    emulator = add_command(
        sub, "emulator", summary="keep the embedded local AWS up, with template.yaml "
                                 "deployed, for the aws CLI, sam and boto3 (until Ctrl-C)",
        description="Start the embedded AWS (S3, SQS, Lambda running the handlers, Step "
                    "Functions running the state machine, CloudFormation), deploy "
                    "template.yaml as a stack, print the endpoint, the stack outputs and "
                    "the export lines a client needs, and stay up until Ctrl-C.",
        examples=["fsd emulator --demo            # then, in another shell, the printed "
                  "exports and the commands of the README",
                  "fsd emulator --port 4567 --env-file emulator.env",
                  "fsd emulator --host 0.0.0.0 --demo   # reachable from sam local's "
                  "containers"])
    emulator.add_argument("--port", type=arguments.bounded_int(0, 65535),
                          default=EMULATOR_PORT,
                          help=f"port to listen on (default {EMULATOR_PORT}; 0: any free port)")
    emulator.add_argument("--host", default=DEFAULT_HOST,
                          help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 lets "
                               f"containers of `sam local` reach it)")
    emulator.add_argument("--stack", default=EMULATOR_STACK,
                          help=f"stack name, also the bucket's (default {EMULATOR_STACK})")
    emulator.add_argument("--region", default=DEFAULT_REGION,
                          help=f"region (default {DEFAULT_REGION})")
    emulator.add_argument("--demo", action="store_true",
                          help="also upload the demo networks and input, and plan and "
                               "compute the run the sample events in events/ act on")
    emulator.add_argument("--env-file", help="also write the export lines to this file "
                                             "(for `source`)")
    emulator.set_defaults(func=cmd_emulator)

