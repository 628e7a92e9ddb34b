"""Structure-level fusion by FiLM: text predicts the scale and shift of image feature maps.

After Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer" (2018): the
conditioning modality (the text's pooled vector) predicts, for each residual block, a per-channel
``gamma`` and ``beta``; the block normalises its feature map and applies ``gamma * x + beta``, so
the sentence steers *which* visual features survive, at every location of the map.

In: ``{"image": tokens (B, H*W, Di) with grid (H, W), "text": pooled (B, Dt)}``;
out: ``(B, out_dim)``. Two read-outs: ``pool=0``, a linear map of the whole modulated grid (the
position is kept by where a feature sits in the flattened vector); ``pool=1``, the paper's
classifier, a 1x1 convolution then a global max over the grid (which answers "is there a place
where the question's features fire?", whatever the number of cells).

``coords=1`` appends two coordinate maps (x and y in ``[-1, 1]``, Liu et al. 2018's CoordConv, as
the FiLM paper does) to the input of the stem, of every block and of the classifier, so that a
block can compute "left of" and "above" from what it sees: spatial relations need it once the
read-out pools over positions.

``keypoints=K`` (with ``pool=2``) adds a spatial soft-argmax read-out (Levine et al., "End-to-End
Training of Deep Visuomotor Policies", 2016): K more 1x1-convolution channels, each turned into a
softmax over the grid and read as the expected ``(x, y)`` where it fires. A pooled max says *that*
the caption's object is there; a keypoint says *where*, in two numbers the head can compare
between two objects ("left of" is ``x_subject < x_object``). The max and mean halves then hold
``(out_dim - 2K) / 2`` channels each, so the output stays ``out_dim`` wide.

``attend=1`` conditions each block on its own part of the sentence, in the manner of the MAC
network's control unit (Hudson and Manning 2018): block k's query, predicted from the pooled
sentence, attends over the text's token features, and block k's ``gamma, beta`` come from that
attended vector beside the pooled one. One pooled vector must tell every block everything at once
("a red circle left of a blue square": which object is the subject, which the reference);
attention lets one block take the subject phrase and another the reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion


class FiLMBlock(nn.Module):
    """``x (B, C, H, W)``, ``gamma, beta (B, C)`` -> ``(B, C, H, W)``:
    ``x + relu(film(norm(conv3x3(relu(conv1x1(x))))))``, the FiLM paper's residual block."""

    def __init__(self, channels: int, extra_in: int = 0, kernel: int = 3, context: bool = False):
        super().__init__()
        self.context = context
        inputs = channels + extra_in + (channels if context else 0)
        self.conv1 = nn.Conv2d(inputs, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        # No affine parameters of its own: FiLM provides them, per example.
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``extra`` ``(B, E, H, W)``: maps concatenated to the block's input (coordinates)."""
        parts = [x] if extra is None else [x, extra]
        if self.context:  # what the whole map holds, at every position
            parts.append(x.amax(dim=(2, 3), keepdim=True).expand_as(x))
        inputs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        h = self.norm(self.conv2(torch.relu(self.conv1(inputs))))
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
        coords: int = 0,
        pool: int = 0,
        kernel: int = 3,
        context: int = 0,
        keypoints: int = 0,
        attend: int = 0,
        condition_token_dim: int | None = None,
        target_key: str = "image",
        condition_key: str = "text",
    ):
        super().__init__()
        self.modalities = (target_key, condition_key)
        self.target_key, self.condition_key = target_key, condition_key
        self.out_dim = out_dim
        self.grid = tuple(grid)
        self.channels = channels
        if coords not in (0, 1) or pool not in (0, 1, 2) or context not in (0, 1):
            raise ValueError(
                f"FiLM coords and context must be 0 or 1 and pool 0, 1 or 2, got "
                f"{coords}, {context} and {pool}"
            )
        if kernel not in (1, 3):
            raise ValueError(f"FiLM kernel must be 1 or 3, got {kernel}")
        if pool == 2 and out_dim % 2:
            raise ValueError(
                f"FiLM pool=2 (max and mean halves) needs an even out_dim, got {out_dim}"
            )
        if keypoints and (pool != 2 or keypoints < 0 or 2 * keypoints >= out_dim):
            raise ValueError(
                f"FiLM keypoints need pool=2 and 0 < 2 * keypoints < out_dim, got keypoints="
                f"{keypoints}, pool={pool}, out_dim={out_dim}"
            )
        self.keypoints = keypoints
        if attend not in (0, 1) or (attend and not condition_token_dim):
            raise ValueError(
                f"FiLM attend must be 0 or 1 and needs the condition's token features, got "
                f"attend={attend}, condition_token_dim={condition_token_dim}"
            )
        self.attend = bool(attend)
        self.coords, self.pool = bool(coords), pool
        extra = 2 if self.coords else 0
        if self.coords:
            ys, xs = torch.meshgrid(
                torch.linspace(-1.0, 1.0, self.grid[0]),
                torch.linspace(-1.0, 1.0, self.grid[1]),
                indexing="ij",
            )
            self.register_buffer("coordinates", torch.stack([xs, ys])[None], persistent=False)
        self.stem = nn.Conv2d(target_dim + extra, channels, 1)
        if self.attend:  # per block: a query over the tokens, then gamma and beta
            self.queries = nn.Linear(condition_dim, blocks * condition_token_dim)
            self.film_generators = nn.ModuleList(
                nn.Sequential(
                    nn.LayerNorm(condition_dim + condition_token_dim),
                    nn.Linear(condition_dim + condition_token_dim, 2 * channels),
                )
                for _ in range(blocks)
            )
        else:
            self.film_generator = nn.Sequential(
                nn.LayerNorm(condition_dim), nn.Linear(condition_dim, 2 * channels * blocks)
            )
        self.blocks = nn.ModuleList(
            FiLMBlock(channels, extra, kernel, bool(context)) for _ in range(blocks)
        )
        if self.pool:
            width = (out_dim - 2 * keypoints) // 2 if pool == 2 else out_dim
            self.out = nn.Sequential(nn.Conv2d(channels + extra, width, 1), nn.ReLU())
            if keypoints:
                self.keypoint_logits = nn.Conv2d(channels + extra, keypoints, 1)
                ys, xs = torch.meshgrid(
                    torch.linspace(-1.0, 1.0, self.grid[0]),
                    torch.linspace(-1.0, 1.0, self.grid[1]),
                    indexing="ij",
                )
                self.register_buffer(
                    "cell_xy", torch.stack([xs.flatten(), ys.flatten()], 1), persistent=False
                )
        else:
            self.out = nn.Sequential(
                nn.Flatten(), nn.Linear(channels * self.grid[0] * self.grid[1], out_dim), nn.ReLU()
            )

    def film_parameters(
        self,
        condition: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, Dc)`` (and, with ``attend``, tokens ``(B, T, Dt)`` with ``mask`` ``(B, T)``)
        -> ``gamma, beta`` each ``(B, blocks, channels)``; gamma starts near 1."""
        batch, blocks = condition.shape[0], len(self.blocks)
        if self.attend:
            if tokens is None:
                raise ValueError("FiLM attend=1 needs the condition's token features")
            queries = self.queries(condition).view(batch, blocks, -1)
            scores = queries @ tokens.transpose(1, 2) / tokens.shape[-1] ** 0.5  # (B, blocks, T)
            if mask is not None:
                scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
            attended = scores.softmax(dim=-1) @ tokens  # (B, blocks, Dt)
            params = torch.stack(
                [
                    generator(torch.cat([condition, attended[:, k]], dim=-1))
                    for k, generator in enumerate(self.film_generators)
                ],
                dim=1,
            ).view(batch, blocks, 2, -1)
        else:
            params = self.film_generator(condition).view(batch, blocks, 2, -1)
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
        extra = self.coordinates.expand(batch, -1, -1, -1) if self.coords else None

        def with_extra(maps: torch.Tensor) -> torch.Tensor:
            return maps if extra is None else torch.cat([maps, extra], dim=1)

        x = self.stem(with_extra(x))
        gamma, beta = self.film_parameters(condition.pooled, condition.tokens, condition.mask)
        for index, block in enumerate(self.blocks):
            x = block(x, gamma[:, index], beta[:, index], extra)
        if self.pool == 2:  # max ("is there one?") and mean ("how many?") over the grid
            maps = self.out(with_extra(x))
            parts = [maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))]
            if self.keypoints:  # where: each channel's expected (x, y) under its softmax
                weights = self.keypoint_logits(with_extra(x)).flatten(2).softmax(dim=2)
                parts.append((weights @ self.cell_xy).flatten(1))
            return torch.cat(parts, dim=1)
        if self.pool:
            return self.out(with_extra(x)).amax(dim=(2, 3))
        return self.out(x)
