"""Checkpoints that survive a kill at any moment and never execute code when loaded.

Layout of ``RUN/checkpoints/step_00001000/``:

- ``weights.safetensors``: model weights under prefixes (``G.``, ``D.``, ``G_ema.``);
- ``state.pt``: optimiser states, counters and RNG states, plain tensors and numbers only, read
  with ``torch.load(weights_only=True)`` so a pickle that would run code is refused;
- ``manifest.json``: step, SHA-256 of both files, the resolved config and library versions, and
  the SHA-256 of the manifest's own content, so a flipped bit in any of the three files is found.

A checkpoint is written into a temporary sibling folder and renamed into place, so a reader sees
either the complete folder or nothing; folders being replaced or pruned are first renamed out of
the ``step_*`` namespace, so a kill never leaves a half-deleted checkpoint that looks complete.
The next writer removes a killed writer's temporaries and fixes a stale ``latest``. Weights with
NaN/Inf are never written, and a full disk is a :class:`CheckpointError` that leaves nothing
half-written. On load, the newest checkpoint whose files match their recorded hashes wins;
damaged ones are skipped with a warning. A file that would run code is not "damaged" (its hash
matched, so someone made it): loading stops with :class:`UnsafeCheckpointError`. A writer that
resumes from an older checkpoint moves the damaged newer ones aside into ``checkpoints/damaged/``
(kept for inspection, out of the ``step_*`` namespace), and pruning only ever removes checkpoints
older than the one just written.

Every command that writes a run folder first calls :func:`prepare_run_folder`, which refuses a
folder that already holds a run of any kind (GAN or multimodal) or a benchmark's results, unless
the command resumes a run of its own kind.

Fault injection for the reliability suite (``tests/faults``), inert unless the variable is set:

- ``GANFUSE_FAULT_CHECKPOINT_DELAY=SECONDS`` sleeps at every stage of a write, widening the
  window in which a kill lands mid-write;
- ``GANFUSE_FAULT_CHECKPOINT_KILL=STAGE[@STEP]`` sends SIGKILL to the writer at ``STAGE`` (one of
  :data:`FAULT_STAGES`), optionally only while writing step ``STEP``.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import pickle
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganfuse.cache import sha256_of_file
from ganfuse.errors import CheckpointError, UserError
from ganfuse.fileio import atomic_write_text

log = logging.getLogger("ganfuse")

WEIGHTS, STATE, MANIFEST = "weights.safetensors", "state.pt", "manifest.json"
FORMAT_VERSION = 2  # 2 adds ``manifest_sha256``; format 1 (without it) is still read
READABLE_FORMATS = (1, 2)
FAULT_STAGES = (
    "tmp_created",
    "weights_written",
    "state_written",
    "manifest_written",
    "renamed",
    "latest_written",
    "pruning",
)
# Temporaries carry their writer's pid: ``.tmp_step_00000010_1234``, ``.trash_step_00000005_1234``,
# ``.latest.tmp1234``, ``.metrics.jsonl.tmp1234``, ``.write_test_1234``.
_TEMPORARY = re.compile(r"^\.(?:tmp_step_\d+_|trash_step_\d+_|write_test_|.+\.tmp)(\d+)$")
_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file whose hash matches but which holds a pickle that could run code."""


def _fault_point(stage: str, step: int) -> None:
    """Test hook; does nothing unless a ``GANFUSE_FAULT_CHECKPOINT_*`` variable is set."""
    delay = os.environ.get("GANFUSE_FAULT_CHECKPOINT_DELAY")
    if delay:
        time.sleep(float(delay))
    kill = os.environ.get("GANFUSE_FAULT_CHECKPOINT_KILL")
    if kill:
        name, _, at = kill.partition("@")
        if name == stage and (not at or int(at) == step):
            os.kill(os.getpid(), signal.SIGKILL)


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_dirs(run_dir: Path, folder: str = "checkpoints") -> list[Path]:
    """Complete-looking checkpoint folders, newest first."""
    root = run_dir / folder
    if not root.is_dir():
        return []
    dirs = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
    ]
    return sorted(dirs, key=lambda p: int(p.name[5:]), reverse=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are stale: this process is not writing them now
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def recover_interrupted_writes(run_dir: Path) -> list[Path]:
    """Undo what a killed writer left in ``run_dir``: delete its temporaries and point each
    ``latest`` file at the newest checkpoint folder (a kill between the rename of a checkpoint and
    the update of ``latest`` leaves it one behind). Returns the temporaries removed.

    Only a writer calls this (the trainer, before it writes): a temporary whose process still
    runs on this machine is kept, so a reader never disturbs a live writer.
    """
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "best"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _TEMPORARY.match(entry.name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:  # a read-only or vanishing leftover is not worth failing a run for
                continue
            removed.append(entry)
        newest = checkpoint_dirs(run_dir, folder.name) if folder != run_dir else []
        try:
            pointed = (folder / "latest").read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            pointed = None
        if newest and pointed != newest[0].name:
            atomic_write_text(folder / "latest", newest[0].name + "\n")
    return removed


def _discard(path: Path, step: int) -> None:
    """Remove a checkpoint folder so that a kill midway never leaves a partial ``step_*``."""
    trash = path.with_name(f".trash_{path.name}_{os.getpid()}")
    os.rename(path, trash)
    _fault_point("pruning", step)
    shutil.rmtree(trash, ignore_errors=True)


def estimate_checkpoint_bytes(weights: dict[str, torch.Tensor], optimizer_moments: int = 2) -> int:
    """Upper estimate of one checkpoint's size: the weights plus ``optimizer_moments`` copies
    (Adam keeps two per parameter) plus headroom for RNG states and the manifest."""
    weight_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    return (1 + optimizer_moments) * weight_bytes + (1 << 20)


def check_free_space(
    run_dir: Path, checkpoint_bytes: int, keep: int, folder: str = "checkpoints"
) -> None:
    """Refuse to start when the disk of ``run_dir`` cannot hold the checkpoints the run will keep.

    A run keeps ``keep`` checkpoints and briefly one more while writing; those already there count.
    """
    existing = len(checkpoint_dirs(run_dir, folder))
    needed = max(1, keep + 1 - existing) * checkpoint_bytes
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:  # pragma: no cover - file systems that do not report usage
        return
    if free < needed:
        raise CheckpointError(
            f"not enough free space in {run_dir}: its checkpoints need about {needed / 2**20:.1f} MiB "
            f"({keep} kept, {checkpoint_bytes / 2**20:.1f} MiB each), {free / 2**20:.1f} MiB free; "
            f"free some space, lower train.keep_checkpoints or choose another --out"
        )


def _nonfinite_tensors(weights: dict[str, torch.Tensor]) -> list[str]:
    return [
        k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


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
    Non-finite weights are never written: the last good checkpoint stays the newest. A write that
    fails (disk full, read-only) leaves no temporary behind and raises :class:`CheckpointError`.
    """
    root = run_dir / folder
    bad = _nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(
            f"refusing to save step {step}: {len(bad)} weight tensor(s) hold NaN/Inf (first: {bad[0]}); "
            f"the last good checkpoint in {root} is kept; lower train.lr_g/train.lr_d or enable train.guard"
        )
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        recover_interrupted_writes(run_dir)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            _fault_point("tmp_created", step)
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS)
            )
            _fault_point("weights_written", step)
            torch.save(state, tmp / STATE)
            _fault_point("state_written", step)
            manifest = {
                "format": FORMAT_VERSION,
                "step": step,
                "time": time.time(),
                "sha256": {WEIGHTS: sha256_of_file(tmp / WEIGHTS), STATE: sha256_of_file(tmp / STATE)},
                "versions": {"ganfuse": _version(), "torch": torch.__version__},
                **meta,
            }
            manifest["manifest_sha256"] = _manifest_digest(manifest)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            _fault_point("manifest_written", step)
            for name in (WEIGHTS, STATE, MANIFEST):
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
            if final.exists():  # a re-save of the same step (e.g. over a damaged one) replaces it
                _discard(final, step)
            os.rename(tmp, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except (OSError, SafetensorError) as exc:  # safetensors reports I/O errors as its own type
        previous = next((p.name for p in checkpoint_dirs(run_dir, folder)), None)
        kept = (
            f"earlier checkpoints are untouched (newest: {previous})"
            if previous
            else "no earlier checkpoint exists"
        )
        raise CheckpointError(
            f"could not write the checkpoint of step {step} into {root}: {_describe(exc)}; {kept}; "
            f"fix the disk and continue with --resume"
        ) from exc
    _fault_point("renamed", step)
    # The checkpoint is complete from here on; readers scan the folders, ``latest`` is for people.
    try:
        atomic_write_text(root / "latest", final.name + "\n")
        _fault_point("latest_written", step)
        # Only older checkpoints are pruned: one newer than this step is not this run's progress
        # (a resumed run moves damaged newer ones aside), and the one just written always stays.
        older = [p for p in checkpoint_dirs(run_dir, folder) if int(p.name[5:]) < step]
        for old in older[max(keep - 1, 0) :]:
            _discard(old, step)
    except OSError as exc:
        log.warning(
            "saved %s, but could not update %s or prune old checkpoints: %s",
            final.name,
            root / "latest",
            _describe(exc),
        )
    return final


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return "the disk is full" if exc.errno in _SPACE_ERRNOS else (exc.strerror or str(exc))
    text = str(exc)
    if any(f"os error {code})" in text for code in _SPACE_ERRNOS):
        return "the disk is full"
    return text


def _version() -> str:
    try:
        return importlib.metadata.version("ganfuse")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Return the manifest of a checkpoint folder whose files match their hashes, else raise."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: manifest missing or unreadable ({exc.__class__.__name__})"
        ) from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: the manifest is not a JSON object")
    fmt = manifest.get("format")
    if type(fmt) is not int or fmt not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {manifest.get('format')!r}; this ganfuse reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}: update ganfuse to read it"
        )
    recorded = manifest.get("manifest_sha256")
    if fmt >= 2 and recorded != _manifest_digest(manifest):
        raise CheckpointError(
            f"{path}: {MANIFEST} does not match its recorded SHA-256 (edited or corrupted)"
        )
    hashes = manifest.get("sha256")
    # checked before any file is opened, so a manifest cannot point the reader at other files
    if not isinstance(hashes, dict) or set(hashes) != {WEIGHTS, STATE}:
        raise CheckpointError(f"{path}: manifest does not list the checkpoint's files")
    if path.name.startswith("step_") and manifest.get("step") != int(path.name[5:]):
        raise CheckpointError(
            f"{path}: manifest names step {manifest.get('step')!r}, the folder another"
        )
    config = manifest.get("config", {})
    sections = ("data", "model", "train")
    if not isinstance(config, dict) or not all(
        isinstance(config.get(s, {}), dict) for s in sections
    ):
        raise CheckpointError(f"{path}: the manifest's config is not a mapping of sections")
    for name, expected in hashes.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_of_file(file) != expected:
            raise CheckpointError(
                f"{path}: {name} does not match its recorded SHA-256 (truncated or corrupted)"
            )
    return manifest


def load_checkpoint_files(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict, dict, dict]:
    """``(manifest, weights, state)`` of one verified checkpoint folder."""
    manifest = verify_checkpoint(path)
    try:
        weights = load_file(str(path / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights unreadable ({exc})") from None
    state = safe_torch_load(path / STATE, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {STATE} does not hold a training state")
    return manifest, weights, state


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers; refuses pickles that run code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        if "weights only" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the file holds Python objects beyond tensors and plain "
                f"containers, and loading it could execute code; do not trust this run folder unless "
                f"you made it ({first})"
            ) from None
        raise CheckpointError(f"{path}: unreadable ({first})") from None
    # torch raises many types on a malformed archive; none may escape as a crash
    except Exception as exc:
        raise CheckpointError(
            f"{path}: unreadable ({exc.__class__.__name__}: {str(exc)[:120]})"
        ) from None


def latest_good_checkpoint(
    run_dir: Path, folder: str = "checkpoints"
) -> tuple[Path, dict, dict, dict]:
    """The newest checkpoint that verifies, as ``(path, manifest, weights, state)``.

    Damaged checkpoints are skipped with a warning; none left is a :class:`CheckpointError`. A
    checkpoint that would execute code stops the search (:class:`UnsafeCheckpointError`).
    """
    candidates = checkpoint_dirs(run_dir, folder)
    if not candidates:
        raise CheckpointError(f"no checkpoint found in {run_dir / folder}")
    reasons = []
    for path in candidates:
        try:
            manifest, weights, state = load_checkpoint_files(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
            reasons.append(str(exc))
            continue
        if reasons:
            log.warning("using %s, the newest intact checkpoint", path.name)
        return path, manifest, weights, state
    raise CheckpointError(
        f"all {len(candidates)} checkpoint(s) in {run_dir / folder} are damaged; cannot resume or sample "
        f"(newest: {reasons[0]})"
    )


def set_aside_newer_checkpoints(run_dir: Path, step: int, folder: str = "checkpoints") -> list[Path]:
    """Move every checkpoint newer than ``step`` into ``run_dir/folder/damaged/``; returns the new paths.

    A writer resuming from ``step`` calls this: the newer checkpoints are the damaged ones the
    resume skipped. They are kept for inspection but leave the ``step_*`` namespace, so they are
    never resumed from, never count towards ``keep_checkpoints``, and a later save of the same step
    does not collide with them. A folder already there gets a suffix (``step_00000020.2``).
    """
    moved = []
    aside = run_dir / folder / "damaged"
    for path in checkpoint_dirs(run_dir, folder):
        if int(path.name[5:]) <= step:
            continue
        aside.mkdir(exist_ok=True)
        target, n = aside / path.name, 1
        while target.exists():
            n += 1
            target = aside / f"{path.name}.{n}"
        os.rename(path, target)
        log.warning(
            "moved the damaged checkpoint %s aside to %s (resuming from step %d)",
            path.name,
            target.relative_to(run_dir),
            step,
        )
        moved.append(target)
    if moved:
        _fsync_dir(run_dir / folder)
    return moved


# ------------------------------------------------------------------ run folders

RUN_KINDS = ("gan", "fusion", "zeroshot", "caption")
"""What a run folder can hold: a GAN run (``ganfuse train``, unconditional, class-conditional or
text-to-image) or one of the multimodal kinds (``ganfuse fuse train``)."""
HOLDS = {  # kind -> what a message says the folder holds
    "gan": "a GAN run",
    "fusion": "a fusion run",
    "zeroshot": "a zero-shot run",
    "caption": "a caption run",
    "benchmark": "the results of a fusion benchmark",
    "unknown": "checkpoints of an unknown kind",
}


def run_folder_contents(run_dir: Path) -> tuple[str, str] | None:
    """What ``run_dir`` already holds, as ``(kind, evidence)``, or ``None`` for a folder without a run.

    ``kind`` is ``"gan"`` (``checkpoints/step_*`` whose manifest names no ``kind``, or a
    ``config.yaml``: a GAN run killed before its first checkpoint), a multimodal kind (``run.json``
    or a checkpoint manifest's ``kind``), ``"benchmark"`` (``results.json`` or a ``runs/`` folder)
    or ``"unknown"`` (checkpoints none of whose manifests can be read). ``evidence`` is the file or
    folder that says so. Manifests are read, not verified: this is about what the folder is, not
    whether its files are intact, and hashing every checkpoint would take seconds.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    marker = run_dir / "run.json"
    if marker.is_file():
        kind = _json_field(marker, "kind")
        return (kind if kind in RUN_KINDS[1:] else "unknown"), marker.name
    checkpoints = checkpoint_dirs(run_dir)
    for path in checkpoints:
        manifest = _json_field(path / MANIFEST, None)
        if isinstance(manifest, dict):
            kind = manifest.get("kind", "gan")
            evidence = f"{path.parent.name}/{path.name}"
            return (kind if kind in RUN_KINDS else "unknown"), evidence
    if (run_dir / "config.yaml").is_file():
        return "gan", "config.yaml"
    if checkpoints:
        return "unknown", f"{checkpoints[0].parent.name}/{checkpoints[0].name}"
    if (run_dir / "results.json").is_file():
        return "benchmark", "results.json"
    runs = run_dir / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        return "benchmark", "runs/"
    return None


def _json_field(path: Path, key: str | None) -> Any:
    """``json[key]`` of a file (the whole document when ``key`` is None); None if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if key is None:
        return data
    return data.get(key) if isinstance(data, dict) else None


def prepare_run_folder(
    run_dir: Path, kind: str, resume: bool = False, resumable: bool = False
) -> tuple[str, str] | None:
    """Make ``run_dir`` ready for a run of ``kind`` before any work; returns what it already held.

    ``kind`` is what the command writes: ``"gan"`` (``ganfuse train``), ``"fusion"``,
    ``"zeroshot"``, ``"caption"`` (``ganfuse fuse train``) or ``"benchmark"``
    (``ganfuse fuse benchmark``); ``resumable`` says whether the command can continue a run
    (``--resume``). A folder that holds a run of any kind, or a benchmark's results, is refused
    with a one-line :class:`UserError` naming what it holds and what to do, unless ``resume``
    and it holds a run of this same kind (or nothing yet: a run killed before its first
    checkpoint, or before it made its folder, starts over). Then the folder is created and a
    small file is written and removed in it, so a read-only or full ``--out`` fails here, not
    after training.
    """
    run_dir = Path(run_dir)
    found = run_folder_contents(run_dir)
    if found is not None:
        held, evidence = found
        holds = f"{HOLDS[held]} ({evidence})"
        if not resume:
            if held == kind and resumable:
                todo = "pass --resume to continue it or choose another --out"
            elif held == kind:
                todo = "choose another --out, or delete the folder to replace it"
            else:
                todo = f"choose another --out for {HOLDS[kind]}"
            raise UserError(f"{run_dir} already holds {holds}; {todo}")
        if held not in (kind, "unknown"):
            raise UserError(
                f"--resume: {run_dir} holds {holds}, not {HOLDS[kind]}; "
                f"choose another --out for {HOLDS[kind]}"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test_{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to the run directory {run_dir}: {exc.strerror or exc}"
        ) from None
    return found
