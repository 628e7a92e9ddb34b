"""Tiny runs shared by the report and serve tests, built once per test session.

Each builder writes into the session's base temporary folder and returns at once when the run
is already there, so the report and serve conftests can both ask for the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TINY_GAN = [
    "--steps",
    "6",
    "--no-progress",
    "--set",
    "model.g_width=32",
    "--set",
    "model.d_width=8",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.log_every=2",
    "--set",
    "train.sample_every=2",
    "--set",
    "train.precision=fp32",
]
TINY_FUSE = [
    "--quiet",
    "--set",
    "steps=3",
    "--set",
    "train_size=64",
    "--set",
    "eval_size=16",
    "--set",
    "batch_size=16",
    "--set",
    "image_widths=[8, 16]",
    "--set",
    "image_dim=32",
    "--set",
    "precision=fp32",
]
# What the report's metrics table must show for the conditional run (written as its eval.json).
EVAL_RESULT = {
    "metrics": {
        "fid": 12.3456,
        "kid": 0.0123,
        "kid_std": 0.0011,
        "precision": 0.625,
        "recall": 0.5,
    },
    "source": "tiny",
    "reference": "digits",
    "n_fake": 500,
    "n_real": 1797,
    "extractor": "digits",
    "resize": "bilinear-antialias",
    "feature_dim": 64,
}
BENCHMARK_ROWS = [
    {
        "task": "matching",
        "fusion": "early",
        "metric": "match_accuracy",
        "value": 0.512,
        "params": 1000,
        "train_seconds": 3.0,
    },
    {
        "task": "matching",
        "fusion": "film",
        "metric": "match_accuracy",
        "value": 0.973,
        "params": 1200,
        "train_seconds": 3.1,
    },
    {
        "task": "zeroshot",
        "fusion": "dual-encoder/small",
        "metric": "heldout_top1",
        "value": 0.905,
        "params": 900,
        "train_seconds": 4.0,
    },
]


def _once(folder: Path, build) -> Path:
    done = folder / ".built"
    if not done.exists():
        build(folder)
        done.write_text("ok")
    return folder


def conditional_gan_run(root: Path) -> Path:
    """A 6-step digits-cond run: 3 log records, sample grids at steps 2, 4, 6, and an eval.json."""

    def build(folder: Path) -> None:
        from ganfuse.cli import main

        # with DiffAugment, so the report has an augmentation curve to draw
        args = ["train", "digits-cond", "--out", str(folder), *TINY_GAN, "--set", "train.augment=translation"]
        assert main(args) == 0
        (folder / "eval.json").write_text(json.dumps([EVAL_RESULT]))

    return _once(root / "tiny-cond", build)


def caption_run(root: Path) -> Path:
    """A 3-step caption run (its captions are nonsense, but deterministic)."""

    def build(folder: Path) -> None:
        from ganfuse.cli import main

        assert (
            main(
                [
                    "fuse",
                    "train",
                    "--task",
                    "caption",
                    "--out",
                    str(folder),
                    *TINY_FUSE,
                    "--set",
                    "decoder_hidden=32",
                ]
            )
            == 0
        )

    return _once(root / "tiny-caption", build)


def benchmark_folder(root: Path) -> Path:
    """A fusion benchmark folder with known results.json rows (no training)."""

    def build(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(BENCHMARK_ROWS))

    return _once(root / "bench", build)


def red_circle_png(path: Path) -> Path:
    """A ``shapes``-style image: large red circle in the centre, black background, 32x32."""
    yy, xx = np.mgrid[:32, :32]
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[(yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 7**2] = (255, 0, 0)
    Image.fromarray(pixels).save(path)
    return path
