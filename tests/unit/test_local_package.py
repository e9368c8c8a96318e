"""The code zip the embedded deploy uploads (local/stack.py's ``sam package``)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fsd_inference.local.stack import zip_folder


def test_the_zip_holds_the_code_not_caches_or_hidden_tool_folders(tmp_path: Path) -> None:
    for name in ("pkg/a.py", "pkg/sub/b.json", "pkg/__pycache__/a.cpython-311.pyc",
                 "pkg/c.pyc", ".zig/ziglang/lib/huge.h", ".mypy_cache/x.json", "Makefile"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    archive = zipfile.ZipFile(io.BytesIO(zip_folder(tmp_path)))
    assert archive.namelist() == ["Makefile", "pkg/a.py", "pkg/sub/b.json"]
    assert archive.read("pkg/sub/b.json") == b"pkg/sub/b.json"
    assert zip_folder(tmp_path) == zip_folder(tmp_path), "deterministic: same code, same zip"
