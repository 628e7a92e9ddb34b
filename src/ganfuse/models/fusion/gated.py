"""Structure-level fusion by gated attention over modalities (a gated multimodal unit).

After Arevalo et al., "Gated Multimodal Units for Information Fusion" (2017): each modality is
projected to ``h_m = tanh(W_m x_m)``, and gates computed from *all* modalities decide, dimension by
dimension, how much of each modality to let through: ``z = softmax_m(W_z [x_1; ...; x_M])``,
``h = sum_m z_m * h_m``. With two modalities the softmax is the paper's sigmoid gate. The gate is
a multiplicative interaction between modalities, which late fusion lacks.

In: ``{name: pooled (B, D_name)}``; out: ``(B, out_dim)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion


class GatedFusion(Fusion):
    """Gated multimodal unit over the pooled vectors of ``in_dims``'s modalities."""

    level = "structure"

    def __init__(self, in_dims: Mapping[str, int], out_dim: int = 256):
        super().__init__()
        self.modalities = tuple(in_dims)
        self.out_dim = out_dim
        self.norms = nn.ModuleDict({name: nn.LayerNorm(dim) for name, dim in in_dims.items()})
        self.proj = nn.ModuleDict({name: nn.Linear(dim, out_dim) for name, dim in in_dims.items()})
        self.gate = nn.Linear(sum(in_dims.values()), len(in_dims) * out_dim)

    def _normed(self, features: Mapping[str, object]) -> dict[str, torch.Tensor]:
        feats = self._read(features)
        return {m: self.norms[m](feats[m].pooled) for m in self.modalities}

    def _gates(self, normed: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([normed[m] for m in self.modalities], dim=-1)
        return torch.softmax(self.gate(x).view(x.shape[0], len(self.modalities), -1), dim=1)

    def gates(self, features: Mapping[str, object]) -> torch.Tensor:
        """The gate values ``(B, M, out_dim)``, summing to one over the modalities."""
        return self._gates(self._normed(features))

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        normed = self._normed(features)
        h = torch.stack([torch.tanh(self.proj[m](normed[m])) for m in self.modalities], dim=1)
        return (self._gates(normed) * h).sum(dim=1)
