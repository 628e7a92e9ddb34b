"""The ``digits`` classifier: the dataset's own feature extractor, shipped with the package.

Trained on a stratified 80 % of the 1,797 real digits (uint8-quantised, as every extractor input
is) and scored on the other 20 %; ``scripts/train_extractors.py`` rebuilds the asset.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ganfuse.data.base import to_uint8
from ganfuse.data.digits import load_digits_tensors
from ganfuse.metrics.classifier import (
    ClassifierSpec,
    ConvClassifier,
    TrainSettings,
    build_classifier,
    calibrate_feature_scale,
    head_accuracy,
    stratified_split,
    train_classifier,
)

DIGITS_SPEC = ClassifierSpec(
    in_channels=1, image_size=32, heads={"digit": 10}, widths=(16, 32, 64), feature_dim=64
)
DIGITS_SETTINGS = TrainSettings(epochs=20, batch_size=64, lr=3e-3, max_shift=2, seed=0)
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 0
ASSET_NAME = "digits_classifier.safetensors"


def digits_asset_path() -> Path:
    return Path(str(resources.files("ganfuse") / "assets" / ASSET_NAME))


def digits_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """All real digits as the classifier sees them: ``(1797, 1, 32, 32)`` float in [-1, 1] after the
    uint8 round trip, and labels ``(1797,)``."""
    images, labels = load_digits_tensors(32)
    return to_uint8(images).float() / 127.5 - 1.0, labels


def digits_split() -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, holdout)`` indices into :func:`digits_inputs`."""
    _, labels = digits_inputs()
    return stratified_split(labels, HOLDOUT_FRACTION, SPLIT_SEED)


def train_digits_classifier() -> tuple[ConvClassifier, dict[str, object]]:
    """Train the shipped classifier from scratch; returns it and its record (accuracy, split, settings)."""
    images, labels = digits_inputs()
    train_rows, holdout_rows = digits_split()
    model = build_classifier(DIGITS_SPEC, seed=DIGITS_SETTINGS.seed)
    losses = train_classifier(
        model, images[train_rows], {"digit": labels[train_rows]}, DIGITS_SETTINGS
    )
    scale = calibrate_feature_scale(model, images[train_rows])
    accuracy = head_accuracy(model, images[holdout_rows], {"digit": labels[holdout_rows]})["digit"]
    info = {
        "dataset": "digits",
        "heldout_accuracy": round(accuracy, 4),
        "heldout_images": len(holdout_rows),
        "train_images": len(train_rows),
        "holdout_fraction": HOLDOUT_FRACTION,
        "split_seed": SPLIT_SEED,
        "train_seed": DIGITS_SETTINGS.seed,
        "epochs": DIGITS_SETTINGS.epochs,
        "final_loss": round(losses[-1], 5),
        "feature_scale": round(scale, 6),
    }
    return model, info
