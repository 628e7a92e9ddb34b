"""The one float <-> uint8 pixel conversion."""

from __future__ import annotations

import pytest
import torch

from ganfuse.data.base import to_uint8, uint8_to_float
from ganfuse.errors import DataError


def test_to_uint8_inverts_uint8_to_float_for_every_value():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(uint8_to_float(pixels)), pixels)
    assert to_uint8(pixels) is pixels  # uint8 passes through


def test_to_uint8_rounds_and_clamps_like_a_saved_png():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0], dtype=torch.float64)
    assert to_uint8(x).tolist() == [0, 0, 64, 128, 255, 255, 255]


def test_to_uint8_refuses_integer_images():
    with pytest.raises(DataError, match="int64"):
        to_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.int64))
