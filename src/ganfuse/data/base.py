"""The dataset protocol every image source follows.

A dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` in ``[-1, 1]`` and
``label`` an ``int`` (``-1`` when the data has no labels). It exposes ``channels``,
``image_size``, ``num_classes`` (0 when unlabelled) and ``class_names``. Datasets small enough to
keep in memory subclass :class:`InMemoryImageDataset`, whose ``images``/``labels`` tensors let the
training loop index whole batches at once instead of item by item.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ganfuse.errors import DataError


class ImageDataset(Dataset):
    name: str = "dataset"
    channels: int
    image_size: int
    num_classes: int = 0
    class_names: list[str] = []
    skipped: int = 0  # unreadable items that were left out, reported to the user

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [0, 255] -> float32 [-1, 1]``, any shape."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float in ``[-1, 1]`` -> uint8 ``round((x + 1) * 127.5)`` clamped to 0..255, any shape, on the
    input's device; uint8 passes through. The inverse of :func:`uint8_to_float`, and the same
    pixels a saved PNG of the images holds."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise DataError(f"expected float images in [-1, 1] or uint8, got dtype {images.dtype}")
    return ((images.detach().float() + 1.0) * 127.5).round_().clamp_(0.0, 255.0).to(torch.uint8)


class InMemoryImageDataset(ImageDataset):
    """Images ``(N, C, H, W)`` held as a tensor (float in [-1, 1], or uint8 to save memory, converted
    on access) and labels ``(N,)`` int64."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_names: list[str] | None = None,
        name: str = "dataset",
    ):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        self.images = images
        self.labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.int64)
        self.class_names = list(class_names or [])
        self.num_classes = len(self.class_names)
        self.channels = images.shape[1]
        self.image_size = images.shape[-1]
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def _as_float(self, images: torch.Tensor) -> torch.Tensor:
        return uint8_to_float(images) if images.dtype == torch.uint8 else images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._as_float(self.images[index]), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fetch a whole batch by index tensor: ``(B, C, H, W)`` float in [-1, 1], ``(B,)``."""
        return self._as_float(self.images[indices]), self.labels[indices]
