"""Feature-level (early) fusion: concatenate the pooled vectors, then an MLP.

The simplest fusion, and the baseline the others must beat: the modalities meet once, as one long
vector, before any decision. In: ``{name: pooled (B, D_name)}``; out: ``(B, out_dim)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion


class EarlyFusion(Fusion):
    """``concat(pooled_m for m in modalities) -> Linear -> ReLU -> Linear -> ReLU``.

    ``in_dims`` maps each modality to its pooled width; the concatenation order is ``in_dims``'s
    order, so the same config always builds the same layer.
    """

    level = "feature"

    def __init__(self, in_dims: Mapping[str, int], out_dim: int = 256, hidden: int = 256):
        super().__init__()
        self.modalities = tuple(in_dims)
        self.out_dim = out_dim
        self.norms = nn.ModuleDict({name: nn.LayerNorm(dim) for name, dim in in_dims.items()})
        self.mlp = nn.Sequential(
            nn.Linear(sum(in_dims.values()), hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
            nn.ReLU(),
        )

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        feats = self._read(features)
        pooled = [self.norms[name](feats[name].pooled) for name in self.modalities]
        return self.mlp(torch.cat(pooled, dim=-1))
