"""Structure-level fusion by a low-rank bilinear (tensor) product of the modalities.

After Liu et al., "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors" (LMF,
2018). Tensor fusion takes the outer product of the modalities' vectors, each with a 1 appended
so unimodal terms survive, and maps it linearly to the output; LMF writes that weight tensor as a
sum of ``rank`` products of per-modality factors, so the fused vector is
``h = sum_i lambda_i * prod_m (W_m^(i) [x_m; 1]) + b`` and the full outer product is never built.
Every output unit is a (rank-limited) product of a text function and an image function: the
modalities interact multiplicatively.

In: ``{name: pooled (B, D_name)}``; out: ``(B, out_dim)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion


class LowRankFusion(Fusion):
    """LMF over the pooled vectors of ``in_dims``'s modalities with ``rank`` factor products."""

    level = "structure"

    def __init__(self, in_dims: Mapping[str, int], out_dim: int = 256, rank: int = 8):
        super().__init__()
        self.modalities = tuple(in_dims)
        self.out_dim = out_dim
        self.rank = rank
        self.norms = nn.ModuleDict({name: nn.LayerNorm(dim) for name, dim in in_dims.items()})
        self.factors = nn.ParameterDict()
        for name, dim in in_dims.items():
            # Unit-variance projections of a layer-normed input, so the products start near 1 in size.
            factor = torch.randn(rank, dim + 1, out_dim) / (dim + 1) ** 0.5
            self.factors[name] = nn.Parameter(factor)
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        feats = self._read(features)
        product = None
        for name in self.modalities:
            x = self.norms[name](feats[name].pooled)
            z = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)  # (B, D+1)
            projected = torch.einsum("bd,rdo->bro", z, self.factors[name])  # (B, rank, out)
            product = projected if product is None else product * projected
        return torch.einsum("r,bro->bo", self.rank_weights, product) + self.bias
