"""Scoring a saved multimodal run again: ``ganfuse fuse evaluate RUN [--split NAME,...]``.

Without ``splits`` a run is scored on the split it was tested on when it trained (``test``, or
``cogent-a-test`` for a run trained on ``cogent-a``), and the numbers are the ones its training
reported. With ``splits`` a fusion run is scored on any split of its world, e.g. a
``scenes-vqa`` run trained on CoGenT's condition A on ``cogent-b`` (condition B).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ganfuse.data.scenes import SPLITS as SCENES_SPLITS
from ganfuse.data.shapes import SPLITS as SHAPES_SPLITS
from ganfuse.errors import ConfigError
from ganfuse.multimodal.captioning import evaluate_caption_run, load_captioner
from ganfuse.multimodal.checkpoint import read_run
from ganfuse.multimodal.config import PAIR_WORLDS, TEST_SPLITS, FuseConfig
from ganfuse.multimodal.folder_world import PAIR_SPLITS
from ganfuse.multimodal.splits import config_split
from ganfuse.multimodal.train import (
    TEST_SEED,
    fusion_task,
    load_fusion_run,
    score_task,
    task_eval_batches,
)
from ganfuse.multimodal.zeroshot import evaluate_config, load_dual_encoder

WORLD_SPLITS: dict[str, tuple[str, ...]] = {
    "shapes": SHAPES_SPLITS,
    "scenes": SCENES_SPLITS,
    **{world: PAIR_SPLITS for world in PAIR_WORLDS},
}


def check_splits(config: FuseConfig, splits: Sequence[str]) -> None:
    """A one-line :class:`ConfigError` unless every name in ``splits`` is a split of the world of
    ``config`` (and there is at least one)."""
    valid = WORLD_SPLITS[config.world]
    bad = [s for s in splits if s not in valid]
    if bad or not splits:
        raise ConfigError(
            f"unknown {config.world} split(s) {bad}; choose from {', '.join(valid)}"
            if bad
            else "no split given"
        )


def score_fusion_split(model: torch.nn.Module, config: FuseConfig, split: str) -> dict[str, float]:
    """Test metrics of a trained fusion ``model`` (its own image encoder, no cached features) on
    ``split`` of its world: ``eval_size`` images (``train_size`` for its training split), the
    questions or negatives drawn from the test seed, so every model scored on a split sees the
    same ones. Per-family accuracies on ``scenes-vqa``."""
    check_splits(config, [split])
    task = fusion_task(config)
    return score_task(model, task, task_eval_batches(task, config_split(config, split), TEST_SEED))


def tested_split(config: FuseConfig) -> str:
    """The split a fusion run was tested on when it trained (``heldout`` on real pairs)."""
    return "heldout" if config.world in PAIR_WORLDS else TEST_SPLITS[config.train_split]


def evaluate_run(
    run_dir: Path | str, splits: Sequence[str] | None = None
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Test metrics of a fusion, zeroshot or caption run, recomputed from its weights.

    ``splits`` None: ``{metric: value}`` on the run's own test split (plus ``heldout`` for
    zeroshot), the same numbers its training reported (same splits, same evaluation seeds); a
    ``world=folder`` run reads its folder (``data``) again.
    ``splits`` given (fusion runs only): ``{split: {metric: value}}`` for each, in order;
    an unknown split name is a :class:`ConfigError`, raised before the model is loaded.
    """
    record = read_run(Path(run_dir))
    config = record.config
    if splits is not None:
        if record.kind != "fusion":
            raise ConfigError(
                f"--split applies to fusion runs only; {record.path} is a {record.kind} run"
            )
        check_splits(config, splits)
    if record.kind == "fusion":
        model, _, _ = load_fusion_run(record.path)
        if splits is None:
            return score_fusion_split(model, config, tested_split(config))
        return {split: score_fusion_split(model, config, split) for split in splits}
    if record.kind == "zeroshot":
        return evaluate_config(load_dual_encoder(record.path), config)
    return evaluate_caption_run(load_captioner(record.path), config)
