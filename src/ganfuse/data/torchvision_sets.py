"""MNIST and CIFAR-10 through torchvision, downloaded when the machine is online.

Offline (or when the download fails), a clear error says how to train on local files instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ganfuse.data.base import InMemoryImageDataset
from ganfuse.errors import OfflineError


def default_root() -> Path:
    return Path(os.environ.get("GANFUSE_CACHE", Path.home() / ".cache" / "ganfuse")) / "datasets"


def load_torchvision(name: str, root: str | None, image_size: int) -> InMemoryImageDataset:
    """``name`` in {"mnist", "cifar10"}: the training split as uint8 images resized to ``image_size``."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    path = Path(root) if root else default_root()
    try:
        ds = cls(str(path), train=True, download=True)
    except Exception as exc:  # urllib/http/checksum failures all mean "could not get the files"
        raise OfflineError(
            f"could not download {name} into {path} ({exc.__class__.__name__}); offline, export the images "
            f"to a folder and train with --set data.name=folder --set data.path=DIR"
        ) from None
    data = torch.as_tensor(ds.data)
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    if images.shape[-1] != image_size:
        images = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True).round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return InMemoryImageDataset(images.contiguous(), labels, class_names=list(ds.classes), name=name)
