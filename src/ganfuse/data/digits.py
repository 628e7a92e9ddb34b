"""scikit-learn's bundled handwritten digits: 1797 real 8x8 grey images with labels 0-9.

Served as ``(1, 32, 32)`` float images in ``[-1, 1]`` (bilinear upscaling), so they fit the
founding document's 32x32 DCGAN. Needs no network: the data ships inside scikit-learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganfuse.data.base import InMemoryImageDataset


def load_digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: images ``(1797, 1, S, S)`` float32 in [-1, 1], labels ``(1797,)`` int64."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # values 0..16
    images = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0) * 2.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return images.contiguous(), labels


class DigitsDataset(InMemoryImageDataset):
    """The digits as an in-memory dataset with 10 classes named ``"0"`` .. ``"9"``."""

    def __init__(self, image_size: int = 32):
        images, labels = load_digits_tensors(image_size)
        super().__init__(images, labels, class_names=[str(d) for d in range(10)], name="digits")
