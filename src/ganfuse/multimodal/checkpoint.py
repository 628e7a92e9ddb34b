"""A multimodal run on disk, in the checkpoint format of the GAN runs (:mod:`ganfuse.train.checkpoint`):
safetensors weights and a manifest with SHA-256 hashes, written atomically, never a pickle that runs code.

``RUN/checkpoints/step_N/``  the trained model after ``N`` steps: ``weights.safetensors`` (a
                             frozen pretrained text encoder's weights are left out: they come from
                             its package when the run is loaded), ``state.pt`` and ``manifest.json``,
                             which holds the run's ``kind`` (``fusion``, ``zeroshot``, ``caption``),
                             the config it ran with (precision resolved) and what else rebuilds the
                             model: the text encoder's config, the task's head sizes, the caption
                             vocabulary. The manifest is what loading reads.
``RUN/config.json``          the same config, for people and the report
``RUN/metrics.json``         validation and test metrics, train seconds, steps, parameters
``RUN/metrics.jsonl``        loss and learning rate per log interval
``RUN/run.json``             ``kind`` and ``format``: what marks the folder as a finished
                             multimodal run for readers that build no model; written last
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganfuse.errors import CheckpointError, ConfigError, UserError
from ganfuse.fileio import atomic_write_text
from ganfuse.multimodal.config import FuseConfig, config_from_dict, save_config
from ganfuse.text import SentenceEncoder, TextEncoder, build_text_encoder
from ganfuse.train.checkpoint import (
    HOLDS,
    checkpoint_dirs,
    latest_good_checkpoint,
    prepare_run_folder,
    run_folder_contents,
    save_checkpoint,
)

__all__ = ["prepare_run_folder"]  # the trainers check their --out with it before any work

CONFIG_FILE = "config.json"
META_FILE = "run.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 2  # 1: model.safetensors beside run.json, without hashes (no longer read)
KINDS: tuple[str, ...] = ("fusion", "zeroshot", "caption")


def frozen_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of frozen pretrained text encoders, whose weights are not saved."""
    return [
        f"{name}." if name else ""
        for name, module in model.named_modules()
        if isinstance(module, SentenceEncoder) and not module.trainable
    ]


def savable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without frozen pretrained parts, every tensor contiguous and unshared."""
    skip = tuple(frozen_prefixes(model))
    return {
        key: value.detach().contiguous().clone()
        for key, value in model.state_dict().items()
        if not (skip and key.startswith(skip))
    }


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters: what a run actually learns."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_run(
    run_dir: Path,
    kind: str,
    model: nn.Module,
    config: FuseConfig,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    *,
    step: int,
) -> Path:
    """Write a run folder (created if missing) whose model was trained ``step`` steps; return it.

    The trainers check ``run_dir`` with :func:`prepare_run_folder` before they train, so a run
    already there is refused before any work; here only a run of another kind (a GAN run, a
    benchmark) is refused, for callers that save a model they trained themselves. Every file is
    written atomically. The checkpoint comes first, so a failed write (a full disk) leaves an
    earlier run in the folder as it was; that run's checkpoints are removed once the new one is
    complete; ``run.json``, which makes the folder a run, comes last.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    run_dir = Path(run_dir)
    held = run_folder_contents(run_dir)
    if held is not None and held[0] != kind:
        raise UserError(
            f"{run_dir} already holds {HOLDS[held[0]]} ({held[1]}), not {HOLDS[kind]}; "
            "save it into another folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = savable_state(model)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"training diverged: {len(bad)} weight tensor(s) hold NaN/Inf (first: {bad[0]}); "
            f"nothing was saved to {run_dir}; lower lr or use precision=fp32"
        )
    earlier = checkpoint_dirs(run_dir)
    manifest = {"kind": kind, "config": config.to_dict(), **meta}
    final = save_checkpoint(run_dir, step, weights, {"step": step}, manifest, keep=len(earlier) + 1)
    for old in earlier:
        if old != final:  # renamed out of the step_* namespace first, as the GAN runs prune
            trash = old.with_name(f".trash_{old.name}_{os.getpid()}")
            os.rename(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
    save_config(config, run_dir / CONFIG_FILE)
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    record = {"kind": kind, "format": FORMAT_VERSION}
    atomic_write_text(run_dir / META_FILE, json.dumps(record, indent=2) + "\n")
    return run_dir


@dataclass
class RunRecord:
    """A run folder's verified checkpoint: config, manifest (``meta``), weights, and its metrics."""

    path: Path
    kind: str
    config: FuseConfig
    meta: dict[str, Any]
    metrics: dict[str, Any]
    weights: dict[str, torch.Tensor]
    checkpoint: Path


@dataclass
class RunResult:
    """A trained run: its model, test metrics, training time and steps, trainable parameters and
    the folder it was saved to (``None``: not saved)."""

    model: nn.Module
    metrics: dict[str, float]
    train_seconds: float
    steps: int
    params: int
    run_dir: Path | None


def read_run(run_dir: Path, kind: str | None = None) -> RunRecord:
    """The newest intact checkpoint of a run folder (damaged ones are skipped, as for GAN runs);
    with ``kind``, a run of another kind is an error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    if not checkpoint_dirs(run_dir):
        if (run_dir / "model.safetensors").is_file():
            raise CheckpointError(
                f"{run_dir} was written by an earlier ganfuse (model.safetensors without a "
                "manifest); train it again with ganfuse fuse train"
            )
        raise CheckpointError(f"{run_dir} holds no checkpoint; is it a 'ganfuse fuse' run?")
    checkpoint, manifest, weights, _ = latest_good_checkpoint(run_dir)
    found = manifest.get("kind")
    if found not in KINDS:
        raise CheckpointError(f"{checkpoint} names unknown multimodal run kind {found!r}")
    if kind is not None and found != kind:
        raise CheckpointError(f"{run_dir} is a {found!r} run, not a {kind} run")
    saved = manifest.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{checkpoint}: the manifest holds no multimodal config")
    try:
        config = config_from_dict(saved)
    except ConfigError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from None
    return RunRecord(run_dir, found, config, manifest, _read_metrics(run_dir), weights, checkpoint)


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def saved_text_encoder(record: RunRecord) -> TextEncoder:
    """The text encoder the run's manifest describes (its name and constructor options)."""
    options = dict(record.meta["text_encoder"])
    return build_text_encoder(options.pop("name"), **options)


def load_weights(model: nn.Module, record: RunRecord) -> None:
    """Load the run's weights into ``model``; everything but frozen parts must match."""
    where = record.checkpoint
    try:
        result = model.load_state_dict(record.weights, strict=False)
    except RuntimeError as exc:  # shapes that differ from the config's model
        raise CheckpointError(f"{where} does not fit the model its config builds: {exc}") from None
    skip = tuple(frozen_prefixes(model))
    missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{where} does not fit the model its config builds "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
