"""Decision-level (late) fusion: one head per modality, then the decisions are combined.

Each modality decides alone, from its own pooled vector, and only the decisions (logits) meet:
by their mean, by learned softmax weights per modality, or by a stacking layer (a linear map of
the concatenated decisions). Whatever the rule, the fused logit is a sum of unimodal functions,
so a question that needs both modalities at once (does *this* caption describe *this* image?)
stays out of reach; that is what the matching benchmark shows.

In: ``{name: pooled (B, D_name)}``; out: decision logits ``(B, out_dim)``. A model with late
fusion reads its task logits straight from this output (see ``ganfuse.models.heads.DecisionSplit``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion

RULES = ("mean", "weighted", "stacking")


def combine_decisions(
    logits: Mapping[str, torch.Tensor],
    rule: str,
    weights: torch.Tensor | None = None,
    stacking: nn.Linear | None = None,
) -> torch.Tensor:
    """Combine per-modality decisions ``{name: (B, K)}`` into ``(B, K)``.

    ``"mean"``: average. ``"weighted"``: ``sum_m softmax(weights)_m * logits_m`` with ``weights``
    ``(M,)`` in the dict's order. ``"stacking"``: ``stacking(concat_m logits_m)``, a linear layer
    ``M*K -> K``.
    """
    stacked = torch.stack(list(logits.values()), dim=0)  # (M, B, K)
    if rule == "mean":
        return stacked.mean(dim=0)
    if rule == "weighted":
        if weights is None or weights.shape != (stacked.shape[0],):
            raise ValueError("rule 'weighted' needs one weight per modality")
        return torch.einsum("m,mbk->bk", torch.softmax(weights, dim=0), stacked)
    if rule == "stacking":
        if stacking is None:
            raise ValueError("rule 'stacking' needs a stacking layer")
        return stacking(torch.cat(list(logits.values()), dim=-1))
    raise ValueError(f"unknown late-fusion rule {rule!r}; choose one of {RULES}")


class LateFusion(Fusion):
    """Per-modality MLP heads ``pooled_m -> (B, out_dim)`` logits, combined by ``rule``."""

    level = "decision"

    def __init__(
        self, in_dims: Mapping[str, int], out_dim: int, rule: str = "mean", hidden: int = 256
    ):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown late-fusion rule {rule!r}; choose one of {RULES}")
        self.modalities = tuple(in_dims)
        self.out_dim = out_dim
        self.rule = rule
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
                )
                for name, dim in in_dims.items()
            }
        )
        # Equal weights at the start: softmax(0) is the mean.
        self.weights = nn.Parameter(torch.zeros(len(in_dims))) if rule == "weighted" else None
        self.stacking = nn.Linear(len(in_dims) * out_dim, out_dim) if rule == "stacking" else None

    def decisions(self, features: Mapping[str, object]) -> dict[str, torch.Tensor]:
        """Each modality's own logits ``{name: (B, out_dim)}``, before combining."""
        feats = self._read(features)
        return {name: self.heads[name](feats[name].pooled) for name in self.modalities}

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        return combine_decisions(self.decisions(features), self.rule, self.weights, self.stacking)
