"""Data sources. ``build_dataset(config.data)`` returns an :class:`~ganfuse.data.base.ImageDataset`."""

from __future__ import annotations

import torch

from ganfuse.config import DataConfig
from ganfuse.data.base import ImageDataset, InMemoryImageDataset
from ganfuse.data.captions import folder_options
from ganfuse.data.digits import DigitsDataset
from ganfuse.data.emoji import EmojiDataset
from ganfuse.data.folder import FolderDataset
from ganfuse.data.huggingface import HuggingFaceStream
from ganfuse.data.scenes import ScenesDataset
from ganfuse.data.shapes import ShapesDataset
from ganfuse.data.shards import ShardDataset
from ganfuse.data.torchvision_sets import load_torchvision
from ganfuse.errors import ConfigError, DataError

__all__ = ["build_dataset", "ImageDataset", "InMemoryImageDataset"]


def emoji_groups_kept(groups: list[str], labels: torch.Tensor, held_out: list[str]) -> torch.Tensor:
    """Boolean ``(N,)``: the emoji whose group (``labels`` index ``groups``) is not in ``held_out``."""
    unknown = sorted(set(held_out) - set(groups))
    if unknown:
        raise ConfigError(f"data.holdout names unknown emoji groups {unknown}; the groups are {', '.join(groups)}")
    out = torch.tensor([groups.index(g) for g in held_out], dtype=labels.dtype)
    return ~torch.isin(labels, out)


def build_dataset(cfg: DataConfig, channels: int | None = None, progress: bool = False) -> ImageDataset:
    if cfg.name == "digits":
        return DigitsDataset(cfg.image_size)
    if cfg.name == "folder":
        return FolderDataset(cfg.path, cfg.image_size, channels or 3, cfg.use_labels, progress=progress,
                             **folder_options(cfg))
    if cfg.name in ("mnist", "cifar10"):
        return load_torchvision(cfg.name, cfg.path, cfg.image_size)
    if cfg.name == "shapes":
        shapes = ShapesDataset(split="train", image_size=cfg.image_size)
        return InMemoryImageDataset(shapes.images, shapes.labels["color_shape"], shapes.class_names, "shapes")
    if cfg.name == "scenes":  # the training split; labels = the number of objects minus one
        scenes = ScenesDataset(split="train", image_size=cfg.image_size)
        return InMemoryImageDataset(scenes.images, scenes.labels, scenes.class_names, "scenes")
    if cfg.name == "emoji":  # every emoji but those of data.holdout's groups; labels = the 10 Unicode groups
        emoji = EmojiDataset(split="all", image_size=cfg.image_size)
        keep = emoji_groups_kept(emoji.class_names, emoji.labels["group"], cfg.holdout or [])
        return InMemoryImageDataset(emoji.images[keep], emoji.labels["group"][keep], emoji.class_names, "emoji")
    if cfg.name == "shards":  # an endless training stream: tar shards, or hf://OWNER/NAME[:SPLIT]
        if str(cfg.path).startswith("hf://"):
            return HuggingFaceStream(cfg.path, cfg.image_size, channels or 3, repeat=True)
        return ShardDataset(cfg.path, cfg.image_size, channels, repeat=True)
    raise DataError(f"unknown dataset {cfg.name!r}")
