"""Pieces shared by the DDP test and its worker script."""

from __future__ import annotations

from unittest import mock

from torch import nn

from ganfuse.config import Config, load_config
from ganfuse.train.loop import Trainer
from ganfuse.train.objectives import OBJECTIVES, GANObjective


def make_config() -> Config:
    # R1 on, augmentation off: every random draw is then global (data order, latents), so one
    # process with batch 64 and two with 32 each must produce the same averaged gradients, to
    # fp32 rounding: the precision is pinned (``auto`` is bf16 on a CPU with native bf16).
    return load_config(
        "digits",
        [
            "train.precision=fp32",
            "model.g_width=32",
            "model.d_width=8",
            "train.batch_size=64",
            "train.r1_gamma=1.0",
            "train.r1_every=1",
            "train.augment=[]",
            "train.ema_decay=0",
        ],
    )


class NoBatchNormObjective(GANObjective):
    """BatchNorm statistics are per process on CPU (SyncBatchNorm is CUDA-only), which would make
    the two runs differ for a reason unrelated to DDP; the test generator has no BatchNorm."""

    def build_models(self, channels: int):
        g, d = super().build_models(channels)
        for module in list(g.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, child_name, nn.Identity())
        return g, d


def NoBatchNormTrainer(config: Config, run_dir, progress: bool = False) -> Trainer:  # noqa: N802
    """A :class:`Trainer` of ``config`` whose GAN objective builds a generator without BatchNorm."""
    with mock.patch.dict(OBJECTIVES, {"gan": NoBatchNormObjective}):
        return Trainer(config, run_dir, progress=progress)
