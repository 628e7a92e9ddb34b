"""The ``shapes`` or ``scenes`` splits a multimodal run uses, built once per process and shared
between runs (and, through :mod:`ganfuse.multimodal.folder_world`, those of ``folder`` and
``emoji``)."""

from __future__ import annotations

from functools import lru_cache

import torch

from ganfuse.data.scenes import ScenesDataset
from ganfuse.data.shapes import ShapesDataset
from ganfuse.multimodal.config import PAIR_WORLDS, FuseConfig
from ganfuse.multimodal.folder_world import PairsData, pairs_split


@lru_cache(maxsize=16)
def shapes_split(split: str, num: int, seed: int = 0, image_size: int = 32) -> ShapesDataset:
    """``ShapesDataset(split, num, seed, image_size)``, cached: a benchmark trains many models on
    the same data. Callers must not modify it."""
    return ShapesDataset(split=split, num=num, seed=seed, image_size=image_size)


@lru_cache(maxsize=16)
def scenes_split(split: str, num: int, seed: int = 0, image_size: int = 32) -> ScenesDataset:
    """``ScenesDataset(split, num, seed, image_size)``, cached like :func:`shapes_split`."""
    return ScenesDataset(split=split, num=num, seed=seed, image_size=image_size)


def config_split(config: FuseConfig, split: str) -> ShapesDataset | ScenesDataset | PairsData:
    """The config's ``split`` of its world: ``train_size`` images for its training split
    (``config.train_split``), ``eval_size`` for any other; on ``folder`` and ``emoji`` every
    image of the split (:func:`~ganfuse.multimodal.folder_world.pairs_split`)."""
    if config.world in PAIR_WORLDS:
        return pairs_split(config, split)
    num = config.train_size if split == config.train_split else config.eval_size
    make = scenes_split if config.world == "scenes" else shapes_split
    return make(split, num, config.data_seed, config.image_size)


def labelled_indices(num: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """The training images whose labels a run may use: ``max(1, round(fraction * num))`` of them,
    a fixed random subset for ``seed`` (a smaller fraction's subset is inside a larger one's)."""
    count = max(1, round(fraction * num))
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return order[:count].sort().values
