"""R-precision as a pure metric: images, prompts and an embedder in, a share of hits out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganfuse.data.shapes import ShapeAttributes, make_caption
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.rprec import r_precision

COLOURS = ("red", "green", "blue")


class ColourEmbedder:
    """Embeds an image by its brightest channel and a text by the colour it names; ``shift`` makes
    every image look like the next colour (a model that is always wrong)."""

    def __init__(self, shift: int = 0):
        self.shift = shift

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        channel = (images.amax(dim=(2, 3)).argmax(dim=1) + self.shift) % 3
        return F.one_hot(channel, 3).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        index = torch.tensor([next(i for i, c in enumerate(COLOURS) if c in t) for t in texts])
        return F.one_hot(index, 3).float() * 0.99 + 0.001


def colour_images(colours: list[str]) -> torch.Tensor:
    images = -torch.ones(len(colours), 3, 8, 8)
    for i, c in enumerate(colours):
        images[i, COLOURS.index(c)] = 1.0
    return images


def test_perfect_and_wrong_embedders_score_one_and_zero():
    prompts = [f"a {c} thing" for c in COLOURS]
    images = colour_images(list(COLOURS))
    assert r_precision(images, prompts, ColourEmbedder(), num_distractors=5) == 1.0
    assert r_precision(images, prompts, ColourEmbedder(shift=1), num_distractors=5) == 0.0


def test_a_distractor_never_says_the_same_thing_as_the_prompt():
    rng = np.random.default_rng(0)
    same = [make_caption(ShapeAttributes("red", "circle", "small", "center"), rng) for _ in range(20)]
    other = make_caption(ShapeAttributes("green", "square", "large", "top-left"), rng)
    images = colour_images(["red"])
    pool = [*same, other]
    assert r_precision(images, [same[0]], ColourEmbedder(), distractor_pool=pool) == 1.0
    with pytest.raises(MetricInputError, match="no distractor"):
        r_precision(images, [same[0]], ColourEmbedder(), distractor_pool=same)


def test_a_run_folder_is_not_an_embedder(tmp_path):
    """Loading a trained model is the caller's job; the error says which function does it."""
    with pytest.raises(MetricInputError, match="load_dual_encoder"):
        r_precision(colour_images(["red"]), ["a red thing"], str(tmp_path))
    with pytest.raises(MetricInputError, match="2 images but 1 prompts"):
        r_precision(colour_images(["red", "blue"]), ["a red thing"], ColourEmbedder())
