"""SNGAN-style residual generator and discriminator for 32x32 and 64x64 images (Miyato et al. 2018).

The generator stacks up-sampling residual blocks (BN -> ReLU -> upsample -> conv3x3 twice, with a
1x1 shortcut), conditional BN when ``num_classes > 0``. The discriminator uses spectrally
normalised down-sampling residual blocks, ReLU, global sum pooling and a projection head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.models.conditioning import Norm2d, ProjectionHead
from ganfuse.models.discriminator import DiscriminatorOutput
from ganfuse.models.layers import maybe_spectral_norm


class GeneratorBlock(nn.Module):
    """``(B, Cin, H, W), y -> (B, Cout, 2H, 2W)``."""

    def __init__(self, cin: int, cout: int, num_classes: int = 0, sn: bool = False):
        super().__init__()
        self.norm1 = Norm2d(cin, num_classes)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(cin, cout, 3, padding=1), sn)
        self.norm2 = Norm2d(cout, num_classes)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(cout, cout, 3, padding=1), sn)
        self.shortcut = maybe_spectral_norm(nn.Conv2d(cin, cout, 1), sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResNetGenerator(nn.Module):
    """``z (B, z_dim)`` [, ``y (B,)``] -> ``(B, channels, S, S)`` in [-1, 1], S in {32, 64}."""

    def __init__(self, z_dim: int = 128, channels: int = 3, image_size: int = 32, width: int = 128,
                 num_classes: int = 0, use_spectral_norm: bool = False):
        super().__init__()
        self.z_dim, self.channels, self.image_size, self.num_classes = z_dim, channels, image_size, num_classes
        self.width = width
        blocks = int(math.log2(image_size // 4))
        self.fc = maybe_spectral_norm(nn.Linear(z_dim, 4 * 4 * width), use_spectral_norm)
        self.blocks = nn.ModuleList(GeneratorBlock(width, width, num_classes, use_spectral_norm) for _ in range(blocks))
        self.out_norm = nn.BatchNorm2d(width)
        self.out_conv = maybe_spectral_norm(nn.Conv2d(width, channels, 3, padding=1), use_spectral_norm)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(getattr(m, "weight_orig", m.weight))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).unflatten(1, (self.width, 4, 4))  # (ONNX keeps the channel count known)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out_conv(F.relu(self.out_norm(h))))


class DiscriminatorBlock(nn.Module):
    """``(B, Cin, H, W) -> (B, Cout, H/2, W/2)`` (or same size when ``down=False``)."""

    def __init__(self, cin: int, cout: int, down: bool = True, first: bool = False, sn: bool = True):
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = maybe_spectral_norm(nn.Conv2d(cin, cout, 3, padding=1), sn)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(cout, cout, 3, padding=1), sn)
        self.shortcut = maybe_spectral_norm(nn.Conv2d(cin, cout, 1), sn) if (cin != cout or down) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # the first block sees raw pixels
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.first:  # SNGAN's optimised first block: pool, then project
            s = self.shortcut(F.avg_pool2d(x, 2) if self.down else x)
        else:
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetDiscriminator(nn.Module):
    """``(B, channels, S, S)`` [, ``y (B,)``] -> logits ``(B,)``; spectral norm on every layer by default."""

    def __init__(self, channels: int = 3, image_size: int = 32, width: int = 128, num_classes: int = 0,
                 use_spectral_norm: bool = True, aux_classifier: bool = False):
        super().__init__()
        sn = use_spectral_norm
        downs = int(math.log2(image_size // 8))  # down to 8x8, then two blocks at 8x8
        layers = [DiscriminatorBlock(channels, width, down=True, first=True, sn=sn)]
        layers += [DiscriminatorBlock(width, width, down=True, sn=sn) for _ in range(downs - 1)]
        layers += [DiscriminatorBlock(width, width, down=False, sn=sn) for _ in range(2)]
        self.blocks = nn.Sequential(*layers)
        self.head = ProjectionHead(width, num_classes, sn, aux_classifier)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(getattr(m, "weight_orig", m.weight))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DiscriminatorOutput:
        h = self.features(x)
        return DiscriminatorOutput(self.head(h, y), class_logits=self.head.classify(h))
