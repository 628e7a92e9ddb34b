"""Image conversions on the way into a feature extractor: every extractor takes uint8 images,
the format real images are stored in, so generated ``[-1, 1]`` floats are quantised exactly as a
saved PNG would be (:func:`ganfuse.data.base.to_uint8`, also exported as ``ganfuse.metrics.to_uint8``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ganfuse.metrics.inputs import MetricInputError

# ITU-R 601-2 luma, the weights PIL uses for "RGB" -> "L".
_LUMA = (0.299, 0.587, 0.114)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> ``(B, channels, H, W)``: grey is repeated to RGB, RGB becomes luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (
            (images.float() * weights)
            .sum(dim=1, keepdim=True)
            .round_()
            .clamp_(0, 255)
            .to(torch.uint8)
        )
    raise MetricInputError(
        f"cannot convert {have}-channel images to {channels} channels (use 1 or 3)"
    )


def resize_bicubic_pil(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> uint8 ``(B, C, size, size)`` with PIL's antialiased bicubic filter.

    Each channel is resized as a float32 ("F" mode) image, as clean-fid does, then rounded back to
    uint8 because the Inception extractor takes uint8.
    """
    if images.shape[-2:] == (size, size):
        return images
    array = images.numpy()
    out = np.empty((*array.shape[:2], size, size), dtype=np.uint8)
    for b in range(array.shape[0]):
        for c in range(array.shape[1]):
            channel = Image.fromarray(array[b, c].astype(np.float32))  # float32 -> "F" mode
            resized = np.asarray(channel.resize((size, size), Image.BICUBIC))
            out[b, c] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)
