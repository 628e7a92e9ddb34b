"""Checkpoints that survive a kill at any moment and never execute code when loaded.

Layout of ``RUN/checkpoints/step_00001000/``:

- ``weights.safetensors``: model weights under prefixes (``G.``, ``D.``, ``G_ema.``);
- ``state.pt``: optimiser states, counters and RNG states, plain tensors and numbers only, read
  with ``torch.load(weights_only=True)`` so a pickle that would run code is refused;
- ``manifest.json``: step, SHA-256 of both files, the resolved config and library versions.

A checkpoint is written into a temporary sibling folder and renamed into place, so a reader sees
either the complete folder or nothing. On load, the newest checkpoint whose files match their
recorded hashes wins; damaged ones are skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganfuse.errors import CheckpointError

log = logging.getLogger("ganfuse")

WEIGHTS, STATE, MANIFEST = "weights.safetensors", "state.pt", "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_dirs(run_dir: Path, folder: str = "checkpoints") -> list[Path]:
    """Complete-looking checkpoint folders, newest first."""
    root = run_dir / folder
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]), reverse=True)


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 3,
    folder: str = "checkpoints",
) -> Path:
    """Write checkpoint ``step`` atomically into ``run_dir/folder``, then prune all but the newest ``keep``.

    ``folder="best"`` holds the checkpoint with the best Frechet distance so far (``keep=1``).
    """
    root = run_dir / folder
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        manifest = {
            "format": FORMAT_VERSION,
            "step": step,
            "time": time.time(),
            "sha256": {WEIGHTS: sha256_file(tmp / WEIGHTS), STATE: sha256_file(tmp / STATE)},
            "versions": {"ganfuse": _version(), "torch": torch.__version__},
            **meta,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for name in (WEIGHTS, STATE, MANIFEST):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():  # a re-save of the same step (e.g. after a resume) replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name + "\n")
    for old in checkpoint_dirs(run_dir, folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _version() -> str:
    from ganfuse import __version__

    return __version__


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Return the manifest of a checkpoint folder whose files match their hashes, else raise."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: manifest missing or unreadable ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}")
    for name, expected in manifest.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_file(file) != expected:
            raise CheckpointError(f"{path}: {name} does not match its recorded SHA-256 (truncated or corrupted)")
    if set(manifest.get("sha256", {})) != {WEIGHTS, STATE}:
        raise CheckpointError(f"{path}: manifest does not list the checkpoint's files")
    return manifest


def load_checkpoint_files(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict, dict]:
    """``(manifest, weights, state)`` of one verified checkpoint folder."""
    manifest = verify_checkpoint(path)
    try:
        weights = load_file(str(path / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights unreadable ({exc})") from None
    state = safe_torch_load(path / STATE, map_location)
    return manifest, weights, state


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers; refuses pickles that run code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects beyond tensors and plain "
            f"containers, and loading it could execute code ({str(exc).splitlines()[0][:120]})"
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.__class__.__name__}: {str(exc)[:120]})") from None


def latest_good_checkpoint(run_dir: Path, folder: str = "checkpoints") -> tuple[Path, dict, dict, dict]:
    """The newest checkpoint that verifies, as ``(path, manifest, weights, state)``.

    Damaged checkpoints are skipped with a warning; none left is a :class:`CheckpointError`.
    """
    candidates = checkpoint_dirs(run_dir, folder)
    if not candidates:
        raise CheckpointError(f"no checkpoint found in {run_dir / folder}")
    for path in candidates:
        try:
            manifest, weights, state = load_checkpoint_files(path)
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
            continue
        return path, manifest, weights, state
    raise CheckpointError(f"every checkpoint in {run_dir / folder} is damaged; cannot resume or sample")
