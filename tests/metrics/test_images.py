"""Conversions into extractor inputs."""

from __future__ import annotations

import torch

from ganfuse.metrics import to_uint8
from ganfuse.metrics.images import match_channels, resize_bicubic_pil


def test_to_uint8_maps_the_range_like_a_saved_png():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).view(1, 1, 1, 7)
    assert to_uint8(x).flatten().tolist() == [0, 0, 64, 128, 255, 255, 255]
    assert to_uint8(x).dtype == torch.uint8


def test_channels_are_matched():
    grey = torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3)
    assert torch.equal(match_channels(grey, 3), grey.repeat(1, 3, 1, 1))
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert match_channels(rgb, 1).item() == 76  # 0.299 * 255, PIL's "L" conversion


def test_bicubic_resize_keeps_constant_images_constant():
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    out = resize_bicubic_pil(flat, 13)
    assert out.shape == (2, 3, 13, 13)
    assert bool((out == 77).all())
