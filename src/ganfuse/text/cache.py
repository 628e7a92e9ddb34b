"""The one on-disk cache of text embeddings.

A frozen sentence encoder encodes tens of captions per second on a CPU, so a dataset's caption
embeddings are kept in ``cache_dir()/text/<encoder>-<digest>.safetensors`` (see
:mod:`ganfuse.cache`), one file per (encoder, set of texts). Files are written through a temporary file unique to the process and an
atomic rename, so DDP ranks that miss the same entry at once both write it whole and the last
rename wins; a reader sees a complete file or none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ganfuse.cache import cache_dir
from ganfuse.fileio import atomic_write


def cache_file(encoder: str, texts: Sequence[str]) -> Path:
    """The cache entry of the distinct ``texts`` embedded by ``encoder`` (a name or a path)."""
    digest = hashlib.sha256(json.dumps([encoder, sorted(set(texts))]).encode()).hexdigest()[:20]
    name = "".join(ch if ch.isalnum() else "_" for ch in encoder)[-40:]
    return cache_dir() / "text" / f"{name}-{digest}.safetensors"


def _read(path: Path, texts: list[str]) -> torch.Tensor | None:
    """The table of a cache file if it holds exactly ``texts`` (sorted); None when missing or
    unreadable (the cache is derived data: a bad entry is recomputed and replaced)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            if json.loads((handle.metadata() or {}).get("texts", "null")) != texts:
                return None
            return handle.get_tensor("pooled")
    except (OSError, SafetensorError, json.JSONDecodeError):
        return None


def cached_embeddings(
    encoder: str, texts: Sequence[str], encode: Callable[[list[str]], torch.Tensor]
) -> torch.Tensor:
    """Embeddings ``(N, E)`` float32 on CPU of ``texts``, rows in their order.

    The distinct texts' table is read from the cache entry of ``(encoder, texts)``; on a miss
    ``encode(distinct texts, sorted)`` -> ``(U, E)`` computes it and the entry is written.
    """
    unique = sorted(set(texts))
    path = cache_file(encoder, unique)
    table = _read(path, unique)
    if table is None:
        table = encode(unique).detach().float().cpu().contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"encoder": encoder, "texts": json.dumps(unique)}
        atomic_write(path, lambda tmp: save_file({"pooled": table}, str(tmp), metadata=meta))
    row = {t: i for i, t in enumerate(unique)}
    return table[[row[t] for t in texts]]
