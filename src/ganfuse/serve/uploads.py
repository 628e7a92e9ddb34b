"""The web app's upload folder: its own, bounded in bytes, removed when the process ends.

Gradio keeps every upload (and every image it sends back) in one folder, ``GRADIO_TEMP_DIR``,
by default ``/tmp/gradio``, shared by every Gradio app of the machine and never emptied. The app
therefore keeps its files in a folder of its own, made once per process (under the user's
``GRADIO_TEMP_DIR`` when one is set), so that bounding it can never delete another app's files.
After every POST request (an upload, a queued call) the oldest files are deleted until the folder
holds at most ``Limits.max_upload_folder_bytes``: a flood of uploads costs bounded disk, and an
image deleted before it was analysed is answered with "upload it again", not a crash.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("ganfuse")

_FOLDER: Path | None = None


def app_upload_folder() -> Path:
    """The folder Gradio keeps this process's uploads in, made on first use and removed at exit.

    Sets ``GRADIO_TEMP_DIR`` to it, so it must be called before the app is built."""
    global _FOLDER
    if _FOLDER is None or not _FOLDER.is_dir():
        parent = os.environ.get("GRADIO_TEMP_DIR") or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        _FOLDER = Path(tempfile.mkdtemp(prefix="ganfuse-serve-", dir=parent)).resolve()
        atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = str(_FOLDER)
    return _FOLDER


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:  # deleted meanwhile
            continue
    return total


def prune_folder(folder: Path, max_bytes: int) -> int:
    """Delete the oldest files under ``folder`` (and the folders they leave empty) until the rest
    holds at most ``max_bytes``; returns the number of bytes deleted."""
    files = []
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        except OSError:
            continue
    total = sum(size for _, size, _ in files)
    freed = 0
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink()
        except OSError:
            continue
        freed += size
        try:
            if path.parent != folder:
                path.parent.rmdir()  # Gradio keeps each upload in a folder of its own
        except OSError:
            pass  # not empty
    return freed


class UploadFolderBudget:
    """ASGI middleware: every POST request prunes ``folder`` to ``max_bytes`` before its response
    starts (so a client that sees its upload answered sees the folder within the bound) and again
    when it ends (Gradio moves some uploads in a task after the response). The first pruning is
    logged; under a flood, a line per upload would bury the rest of the log."""

    def __init__(self, app, folder: Path, max_bytes: int):
        self.app, self.folder, self.max_bytes = app, Path(folder), max_bytes
        self.pruned = False

    def prune(self) -> None:
        freed = prune_folder(self.folder, self.max_bytes)
        if freed and not self.pruned:
            self.pruned = True
            log.warning(
                "the upload folder %s reached its limit of %.0f MB; the oldest files are "
                "deleted from now on (Limits.max_upload_folder_bytes)",
                self.folder,
                self.max_bytes / 2**20,
            )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return

        async def send_after_pruning(message) -> None:
            if message["type"] == "http.response.start":
                self.prune()
            await send(message)

        await self.app(scope, receive, send_after_pruning)
        self.prune()
