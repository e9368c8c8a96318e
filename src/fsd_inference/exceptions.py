"""One exception hierarchy: every error the user can cause derives from FsdError.

The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class FsdError(Exception):
    """Root of every error fsd-inference raises on purpose."""


class InputFormatError(FsdError):
    """A file does not follow the format it claims; names the file and the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ModelError(FsdError):
    """A network is inconsistent as a whole (missing layers, mixed sizes, no bias)."""


class ConfigError(FsdError):
    """An option or combination of options cannot be honoured."""
