"""Class conditioning: conditional BatchNorm for generators, projection for discriminators.

Conditional BN (de Vries et al. 2017; Miyato & Koyama 2018) normalises without its own affine
parameters and takes a per-class scale and shift from embeddings. The projection discriminator
(Miyato & Koyama 2018) adds ``<embed(y), phi(x)>`` to the unconditional logit.
"""

from __future__ import annotations

import torch
from torch import nn

from ganfuse.models.layers import maybe_spectral_norm


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose affine scale and shift come from the class: ``(B, C, H, W), (B,) -> same``."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.scale(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


class Norm2d(nn.Module):
    """BatchNorm2d, or its class-conditional form when ``num_classes > 0``; always called as ``(x, y)``."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.conditional = num_classes > 0
        self.norm = ConditionalBatchNorm2d(channels, num_classes) if self.conditional else nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.norm(x, y) if self.conditional else self.norm(x)


class ProjectionHead(nn.Module):
    """Final logit of a discriminator: ``linear(h) + <embed(y), h>``; ``(B, F), (B,) -> (B,)``.

    With ``aux_classifier`` it also holds a linear classifier of the same features,
    ``classify(h) (B, F) -> (B, num_classes)``: the auxiliary classifier of AC-GAN (Odena et al.
    2017), trained on real images' labels, whose verdict on fakes the generator is asked to match.
    """

    def __init__(self, features: int, num_classes: int = 0, use_spectral_norm: bool = False,
                 aux_classifier: bool = False):
        super().__init__()
        sn = use_spectral_norm
        self.linear = maybe_spectral_norm(nn.Linear(features, 1), sn)
        self.embed = maybe_spectral_norm(nn.Embedding(num_classes, features), sn) if num_classes > 0 else None
        if aux_classifier and num_classes < 2:
            raise ValueError("an auxiliary classifier needs at least two classes")
        self.classifier = maybe_spectral_norm(nn.Linear(features, num_classes), sn) if aux_classifier else None

    def forward(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a class-conditional discriminator needs labels")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out

    def classify(self, h: torch.Tensor) -> torch.Tensor | None:
        """Class logits ``(B, num_classes)`` of the auxiliary classifier, None without one."""
        return None if self.classifier is None else self.classifier(h)
