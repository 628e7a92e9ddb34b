"""A multimodal run on disk: weights as safetensors, config and metadata as JSON, no pickle.

``RUN/model.safetensors``  the weights (a frozen pretrained text encoder's are left out: they
                           come from its package when the run is loaded)
``RUN/config.json``        the :class:`FuseConfig`
``RUN/run.json``           what else rebuilds the model: ``kind`` (``fusion``, ``zeroshot``,
                           ``caption``), the text encoder's config (with the small encoder's
                           vocabulary), the task's head sizes, the caption vocabulary
``RUN/metrics.json``       validation and test metrics, train seconds, steps, parameters
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ganfuse.errors import CheckpointError, ConfigError
from ganfuse.fileio import atomic_write, atomic_write_text
from ganfuse.multimodal.config import FuseConfig, config_from_dict, save_config
from ganfuse.text import SentenceEncoder

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "run.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1
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
) -> Path:
    """Write a run folder (created if missing) and return it. Each file is written atomically
    (temporary file, then rename), so a kill never leaves a truncated one; the metadata file,
    which makes the folder a run, comes after the weights and config it describes."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = savable_state(model)
    atomic_write(run_dir / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    save_config(config, run_dir / CONFIG_FILE)
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    record = {"kind": kind, "format": FORMAT_VERSION, **meta}
    atomic_write_text(run_dir / META_FILE, json.dumps(record, indent=2) + "\n")
    return run_dir


@dataclass
class RunRecord:
    """A run folder's config, metadata and metrics, read without building the model."""

    path: Path
    kind: str
    config: FuseConfig
    meta: dict[str, Any]
    metrics: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing; is {path.parent} a 'ganfuse fuse' run?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_run(run_dir: Path) -> RunRecord:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    meta = _read_json(run_dir / META_FILE)
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{run_dir / META_FILE} names unknown run kind {kind!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written in format {meta.get('format')!r}; this ganfuse reads {FORMAT_VERSION}"
        )
    try:
        config = config_from_dict(_read_json(run_dir / CONFIG_FILE))
    except ConfigError as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    metrics_path = run_dir / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    return RunRecord(run_dir, kind, config, meta, metrics)


def load_weights(model: nn.Module, run_dir: Path) -> None:
    """Load ``RUN/model.safetensors`` into ``model``; everything but frozen parts must match."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ from the config's model
        raise CheckpointError(f"{path} does not fit the model its config builds: {exc}") from None
    skip = tuple(frozen_prefixes(model))
    missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit the model its config builds "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
