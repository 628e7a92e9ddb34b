"""Crash-safe file writes: a file is either its old content or its complete new content.

Every write goes to a temporary file in the same folder, is flushed to disk, and is renamed over
the target (``os.replace`` is atomic on POSIX and Windows). A kill or a full disk in the middle
leaves the previous file intact and no partial one behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to produce the new file at a temporary path, then rename it to ``path``.
    On failure the temporary is removed and ``path`` keeps its old content."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
