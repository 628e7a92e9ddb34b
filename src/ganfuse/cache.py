"""Where ganfuse keeps caches: downloaded weights, reference statistics, text embeddings.

``$GANFUSE_CACHE`` if set, else ``$XDG_CACHE_HOME/ganfuse``, else ``~/.cache/ganfuse``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "GANFUSE_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ganfuse"


def sha256_of_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
