"""The runtime's side of one fork server ("zygote"): init once, fork a sandbox per need.

A :class:`Zygote` starts lambda_child.py for one function configuration (code, handler,
environment), which imports the handler once and then forks sandboxes on request. Why:
62 sandboxes that each import boto3, numpy and scipy cost 62 x 85 MB and 62 x ~1.5 s of
CPU before the first layer; forked from one initialised process they share those pages
(copy on write) and start in milliseconds (bench/sandboxes.py measures both).

The control channel is a Unix socket pair. A reader thread takes the server's messages
(ready or init error, the pid of each fork, the exit status of each sandbox that ended)
so that a sandbox's exit status is known although it is the server's child, not ours.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from fsd_inference.exceptions import FsdError
from fsd_inference.local import lambda_child

_BOOTSTRAP = Path(lambda_child.__file__).read_text(encoding="utf-8")
KILL_WAIT_S = 10.0


class ZygoteError(FsdError):
    """The fork server is gone or did not answer; names the function."""


class Zygote:
    """One fork server process and what it reported."""

    def __init__(self, name: str, code_dir: Path, environment: Mapping[str, str],
                 log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        ours, theirs = socket.socketpair()
        env = {**environment, lambda_child.ZYGOTE_FD_ENV: str(theirs.fileno())}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=code_dir, env=env, pass_fds=(theirs.fileno(),),
                start_new_session=True)
        theirs.close()
        self._channel = ours
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._init: dict[str, Any] | None = None  # {"ready": True} or {"init_error": ...}
        self._spawned: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._closed = False
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"zygote-{name}")
        self._reader.start()

    # ------------------------------------------------------------------ messages

    def _read(self) -> None:
        with self._channel.makefile("r", encoding="utf-8") as lines, \
                suppress(OSError, ValueError):
            for line in lines:
                message = json.loads(line)
                with self._state:
                    if "spawned" in message:
                        self._spawned[message["spawned"]] = message["pid"]
                    elif "exited" in message:
                        self._exits[message["exited"]] = message["status"]
                    else:
                        self._init = message
                    self._state.notify_all()
        with self._state:
            self._closed = True
            self._state.notify_all()

    @property
    def alive(self) -> bool:
        with self._state:
            return not self._closed and self.process.poll() is None

    def wait_ready(self, timeout_s: float) -> dict[str, Any] | None:
        """None once the handler is imported; Lambda's init error payload if it failed;
        raises ZygoteError if nothing came within ``timeout_s``."""
        with self._state:
            self._state.wait_for(lambda: self._init is not None or self._closed, timeout_s)
            if self._init is not None:
                error: dict[str, Any] | None = self._init.get("init_error")
                return error
        if self.process.poll() is not None:
            return lambda_child.error_payload(
                "Runtime.ExitError", f"Runtime exited during init: exit status "
                                     f"{self.process.returncode}")
        raise ZygoteError(f"function {self.name}: init did not finish within "
                          f"{timeout_s:g} s")

    def spawn(self, environment: Mapping[str, str], channel: socket.socket, log_fd: int,
              timeout_s: float) -> int:
        """Fork a sandbox that serves on ``channel`` and logs to ``log_fd``; its pid."""
        request_id = next(self._ids)
        body = json.dumps({"spawn": request_id, "env": dict(environment)}).encode()
        try:
            with self._send_lock:
                self._channel.sendall(lambda_child.HEADER.pack(len(body)) + body)
                socket.send_fds(self._channel, [b"F"], [channel.fileno(), log_fd])
        except OSError as exc:
            raise ZygoteError(f"function {self.name}: the fork server is gone ({exc})") from exc
        with self._state:
            self._state.wait_for(lambda: request_id in self._spawned or self._closed,
                                 timeout_s)
            if request_id not in self._spawned:
                raise ZygoteError(f"function {self.name}: the fork server did not fork "
                                  f"within {timeout_s:g} s")
            return self._spawned.pop(request_id)

    def exited(self, pid: int) -> bool:
        with self._state:
            return pid in self._exits

    def exit_status(self, pid: int, timeout_s: float = KILL_WAIT_S) -> int | None:
        """The sandbox's exit status, waiting for the server to reap it."""
        with self._state:
            self._state.wait_for(lambda: pid in self._exits or self._closed, timeout_s)
            return self._exits.get(pid)

    def close(self, wait: bool = True) -> None:
        """Stop the server (its sandboxes are stopped by their owners); without ``wait``,
        only tell it to stop (close() again to wait for it)."""
        with suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            self._channel.close()
        if not wait:
            return
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(KILL_WAIT_S)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(KILL_WAIT_S)
