"""The image encoder of the multimodal models: a small CNN giving a pooled vector and a patch grid.

In: images ``(B, 3, S, S)`` in ``[-1, 1]``. Out: :class:`~ganfuse.models.fusion.ModalityFeatures`
with ``pooled (B, dim)``, ``tokens (B, (S/8)^2, dim)`` (one per cell of the last feature map,
row-major, with a learned position embedding added) and ``grid (S/8, S/8)``. The pooled vector is a
linear map of the *whole* flattened grid rather than an average, so it keeps where things are:
the ``shapes`` tasks ask about position.

Two inductive biases make colour and form separate facts, which is what recognising a colour-shape
pair never seen in training needs (measured in ``benchmarks/fusion.md``):

- a brightness channel, the per-pixel maximum over RGB (HSV's "value"), is fed in beside RGB: the
  same form gives the same brightness map whatever its hue, so form detectors can ignore hue;
- the stem's feature maps, global-max-pooled (is this colour/edge anywhere?), join the pooled
  vector: a hue read-out that does not depend on the form it sits on.
"""

from __future__ import annotations

import torch
from torch import nn

from ganfuse.models.fusion import ModalityFeatures, ModalitySpec


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """A stride-2 conv stem, then stages that each halve the map again (stride-2 conv, then a
    stride-1 conv): ``S -> S/8`` with the default three widths. ``widths`` are the stem's and the
    stages' channels. Channels-last memory layout: about twice as fast for these convs on CPU.
    ``factorized=False`` drops the brightness channel and the global stem pooling."""

    def __init__(
        self,
        dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 128),
        image_size: int = 32,
        in_channels: int = 3,
        factorized: bool = True,
    ):
        super().__init__()
        side = image_size // 2 ** len(widths)
        if side * 2 ** len(widths) != image_size:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(widths)}")
        self.factorized = factorized
        self.stem = _conv_bn_relu(in_channels + int(factorized), widths[0], 2)
        layers = []
        for previous, width in zip(widths[:-1], widths[1:], strict=True):
            layers += [_conv_bn_relu(previous, width, 2), _conv_bn_relu(width, width, 1)]
        self.stages = nn.Sequential(*layers)
        self.grid = (side, side)
        self.dim = dim
        self.token_dim = dim
        self.image_size = image_size
        self.to_tokens = nn.Conv2d(widths[-1], dim, 1)
        self.to(memory_format=torch.channels_last)
        self.position = nn.Parameter(torch.randn(side * side, dim) * 0.02)
        pooled_in = widths[-1] * side * side + (widths[0] if factorized else 0)
        self.to_pooled = nn.Linear(pooled_in, dim)

    @property
    def spec(self) -> ModalitySpec:
        return ModalitySpec(pooled_dim=self.dim, token_dim=self.token_dim, grid=self.grid)

    def forward(self, images: torch.Tensor) -> ModalityFeatures:
        if images.ndim != 4 or images.shape[-1] != self.image_size:
            raise ValueError(
                f"expected images (B, C, {self.image_size}, {self.image_size}), got {tuple(images.shape)}"
            )
        if self.factorized:
            images = torch.cat([images, images.amax(dim=1, keepdim=True)], dim=1)
        stem = self.stem(images.contiguous(memory_format=torch.channels_last))
        maps = self.stages(stem)
        tokens = self.to_tokens(maps).flatten(2).transpose(1, 2) + self.position
        summary = [maps.flatten(1)] + ([stem.amax(dim=(2, 3))] if self.factorized else [])
        pooled = self.to_pooled(torch.cat(summary, dim=1))
        return ModalityFeatures(pooled=pooled, tokens=tokens, grid=self.grid)
