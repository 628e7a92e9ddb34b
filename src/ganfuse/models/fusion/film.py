"""Structure-level fusion by FiLM: text predicts the scale and shift of image feature maps.

After Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer" (2018): the
conditioning modality (the text's pooled vector) predicts, for each residual block, a per-channel
``gamma`` and ``beta``; the block normalises its feature map and applies ``gamma * x + beta``, so
the sentence steers *which* visual features survive, at every location of the map.

In: ``{"image": tokens (B, H*W, Di) with grid (H, W), "text": pooled (B, Dt)}``;
out: ``(B, out_dim)``, a linear map of the whole modulated grid (so the position is kept).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion


class FiLMBlock(nn.Module):
    """``x (B, C, H, W)``, ``gamma, beta (B, C)`` -> ``(B, C, H, W)``:
    ``x + relu(film(norm(conv3x3(relu(conv1x1(x))))))``, the FiLM paper's residual block."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # No affine parameters of its own: FiLM provides them, per example.
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv2(torch.relu(self.conv1(x))))
        h = gamma[:, :, None, None] * h + beta[:, :, None, None]
        return x + torch.relu(h)


class FiLMFusion(Fusion):
    """FiLM-ed residual blocks over the target's patch grid, conditioned on the other's pooled vector."""

    level = "structure"

    def __init__(
        self,
        target_dim: int,
        condition_dim: int,
        grid: tuple[int, int],
        out_dim: int = 256,
        channels: int = 64,
        blocks: int = 2,
        target_key: str = "image",
        condition_key: str = "text",
    ):
        super().__init__()
        self.modalities = (target_key, condition_key)
        self.target_key, self.condition_key = target_key, condition_key
        self.out_dim = out_dim
        self.grid = tuple(grid)
        self.channels = channels
        self.stem = nn.Conv2d(target_dim, channels, 1)
        self.film_generator = nn.Sequential(
            nn.LayerNorm(condition_dim), nn.Linear(condition_dim, 2 * channels * blocks)
        )
        self.blocks = nn.ModuleList(FiLMBlock(channels) for _ in range(blocks))
        self.out = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * self.grid[0] * self.grid[1], out_dim), nn.ReLU()
        )

    def film_parameters(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, Dc)`` -> ``gamma, beta`` each ``(B, blocks, channels)``; gamma starts near 1."""
        params = self.film_generator(condition).view(condition.shape[0], len(self.blocks), 2, -1)
        return 1.0 + params[:, :, 0], params[:, :, 1]

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        feats = self._read(features)
        target, condition = feats[self.target_key], feats[self.condition_key]
        if target.tokens is None:
            raise ValueError("FiLM fusion needs the target's patch grid (tokens)")
        height, width = target.grid or self.grid
        if (height, width) != self.grid:
            raise ValueError(f"FiLM fusion built for a {self.grid} grid, got {(height, width)}")
        batch = target.tokens.shape[0]
        x = target.tokens.transpose(1, 2).reshape(batch, -1, height, width)
        x = self.stem(x)
        gamma, beta = self.film_parameters(condition.pooled)
        for index, block in enumerate(self.blocks):
            x = block(x, gamma[:, index], beta[:, index])
        return self.out(x)
