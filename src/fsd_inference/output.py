"""Where machine-readable results go: a file (written atomically) or stdout.

Every command with a machine-readable result takes ``--json FILE``; ``--json -`` puts
the JSON on stdout. Then stdout must hold nothing else, so for the whole command
:func:`human_lines_to_stderr` sends what is printed for people to stderr and keeps the
real stdout for :func:`write_json` alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from contextvars import ContextVar
from pathlib import Path
from typing import TextIO

from fsd_inference.model.tsv import atomic_path

STDOUT = "-"
_RESULT_STREAM: ContextVar[TextIO | None] = ContextVar("result_stream", default=None)


@contextmanager
def human_lines_to_stderr(json_target: str | None) -> Iterator[None]:
    """With ``json_target == "-"``: prints go to stderr, JSON to the real stdout."""
    if json_target != STDOUT:
        yield
        return
    token = _RESULT_STREAM.set(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _RESULT_STREAM.reset(token)


def write_json(document: object, target: str | Path | None, what: str = "metrics") -> None:
    """Write ``document`` to the file ``target`` atomically, or to stdout for ``-``;
    nothing when ``target`` is None. Says where a file went."""
    if target is None or target == "":
        return
    text = json.dumps(document, indent=1)
    if str(target) == STDOUT:
        stream = _RESULT_STREAM.get() or sys.stdout
        stream.write(text + "\n")
        stream.flush()
        return
    path = Path(target)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    print(f"{what} written to {path}")
