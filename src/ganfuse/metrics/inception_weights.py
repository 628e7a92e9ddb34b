"""Finding, checking and (when online) downloading the FID Inception-v3 weights.

The weights are the TensorFlow ``inception-2015-12-05`` graph converted to PyTorch, the file that
pytorch-fid ships as ``pt_inception-2015-12-05-6726825d.pth`` and torch-fidelity as
``weights-inception-2015-12-05-6726825d.pth`` (``6726825d`` is the start of its SHA-256). Every
file is checked against the full SHA-256 before it is loaded, because loading it unpickles.

Lookup order: the ``weights`` argument (``--weights``), ``$GANFUSE_INCEPTION_WEIGHTS``, the cache
(``<cache>/weights/pt_inception-2015-12-05-6726825d.pth``), then a download into the cache.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from ganfuse.cache import cache_dir, sha256_of_file
from ganfuse.errors import CheckpointError, OfflineError

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_URLS = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
)
WEIGHTS_ENV = "GANFUSE_INCEPTION_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 20.0


def cached_weights_path() -> Path:
    return cache_dir() / "weights" / INCEPTION_FILENAME


def verify_weights(path: Path) -> Path:
    """Return ``path`` if it is the known Inception weights file; raise :class:`CheckpointError` if
    it is missing or its SHA-256 differs."""
    if not path.is_file():
        raise CheckpointError(f"Inception weights file not found: {path}")
    actual = sha256_of_file(path)
    if actual != INCEPTION_SHA256:
        raise CheckpointError(
            f"refusing {path}: its SHA-256 is {actual}, but the FID Inception weights "
            f"({INCEPTION_FILENAME}) have {INCEPTION_SHA256}; download the file again"
        )
    return path


def find_inception_weights(weights: str | Path | None = None) -> Path | None:
    """The weights file to use without any download, or None; an explicit or environment path
    that is missing or wrong raises instead of falling through silently."""
    for given in (weights, os.environ.get(WEIGHTS_ENV) or None):
        if given is not None:
            return verify_weights(Path(given).expanduser())
    cached = cached_weights_path()
    return verify_weights(cached) if cached.is_file() else None


def _offline_message(reason: str) -> str:
    return (
        f"the FID Inception weights are not available and could not be downloaded ({reason}). "
        f"Place {INCEPTION_FILENAME} (SHA-256 {INCEPTION_SHA256}, from {INCEPTION_URLS[0]}) at "
        f"{cached_weights_path()}, or pass --weights PATH / set {WEIGHTS_ENV}=PATH; "
        "or use --extractor digits (the dataset's own extractor, no download)"
    )


def download_inception_weights(urls: tuple[str, ...] = INCEPTION_URLS) -> Path:
    """Download into the cache (temp file, checked, then renamed); :class:`OfflineError` if no URL works."""
    target = cached_weights_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    reasons = []
    for url in urls:
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
                open(partial, "wb") as out,
            ):
                while block := response.read(1 << 20):
                    out.write(block)
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
            partial.unlink(missing_ok=True)
            continue
        try:
            verify_weights(partial)
        except CheckpointError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return target
    raise OfflineError(_offline_message("; ".join(reasons)))


def resolve_inception_weights(weights: str | Path | None = None, download: bool = True) -> Path:
    """A verified local weights file, downloading it if allowed; :class:`OfflineError` otherwise."""
    found = find_inception_weights(weights)
    if found is not None:
        return found
    if not download:
        raise OfflineError(_offline_message("downloads disabled"))
    return download_inception_weights()
