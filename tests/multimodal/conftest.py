"""Tiny trained runs shared by the multimodal tests (seconds each: a few steps on a few images)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = ["train_size=64", "eval_size=24", "batch_size=8", "steps=3", "warmup_steps=1", "threads=1",
        "precision=fp32"]


@pytest.fixture(scope="session")
def matching_run(tmp_path_factory):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.train import train_fusion

    out = tmp_path_factory.mktemp("runs") / "matching-early"
    result = train_fusion(make_config("matching", "early", TINY), out, progress=False)
    return result


@pytest.fixture(scope="session")
def zeroshot_run(tmp_path_factory):
    from ganfuse.multimodal.config import make_config
    from ganfuse.multimodal.zeroshot import train_zeroshot

    out = tmp_path_factory.mktemp("runs") / "zeroshot"
    return train_zeroshot(make_config("zeroshot", None, TINY), out, progress=False)


@pytest.fixture(scope="session")
def caption_run(tmp_path_factory):
    from ganfuse.multimodal.captioning import train_captioner
    from ganfuse.multimodal.config import make_config

    out = tmp_path_factory.mktemp("runs") / "caption"
    return train_captioner(make_config("caption", None, TINY), out, progress=False)


@pytest.fixture(scope="session")
def shape_png(tmp_path_factory):
    """A rendered 'small red circle in the center' as a PNG file."""
    from PIL import Image

    from ganfuse.data.shapes import ShapeAttributes, render_shape

    path = tmp_path_factory.mktemp("images") / "red-circle.png"
    Image.fromarray(render_shape(ShapeAttributes("red", "circle", "small", "center"))).save(path)
    return path
