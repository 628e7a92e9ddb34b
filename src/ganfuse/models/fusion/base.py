"""What every fusion module takes and gives.

A fusion module maps a dict of per-modality features, keyed by modality name (``"image"``,
``"text"``), to one fused tensor ``(B, out_dim)``. Each modality arrives as
:class:`ModalityFeatures`: a pooled vector and, where the encoder has them, a sequence of token
features (text tokens, or image patches in row-major grid order). Plain tensors ``(B, D)`` are
accepted too and read as pooled features, so a module can be tried on anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModalityFeatures:
    """One modality's encoder output for a batch.

    ``pooled`` ``(B, D)``; ``tokens`` ``(B, T, Dt)`` or ``None``; ``mask`` ``(B, T)`` bool with
    ``True`` on real tokens (``None``: all real); ``grid`` ``(H, W)`` when the tokens are an image
    patch grid flattened row by row (``H * W == T``).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    def select(self, index: torch.Tensor) -> ModalityFeatures:
        """The features of batch rows ``index`` ``(B',)``, e.g. to pair one image with two captions."""
        return ModalityFeatures(
            pooled=self.pooled[index],
            tokens=None if self.tokens is None else self.tokens[index],
            mask=None if self.mask is None else self.mask[index],
            grid=self.grid,
        )

    def detach(self) -> ModalityFeatures:
        return ModalityFeatures(
            pooled=self.pooled.detach(),
            tokens=None if self.tokens is None else self.tokens.detach(),
            mask=self.mask,
            grid=self.grid,
        )


def as_features(value: ModalityFeatures | torch.Tensor | object) -> ModalityFeatures:
    """Read a tensor ``(B, D)`` as pooled features; read any object with ``pooled`` (and optionally
    ``tokens``/``mask``/``grid``, such as the text encoders' ``TextFeatures``) field by field."""
    if isinstance(value, ModalityFeatures):
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim != 2:
            raise ValueError(f"a tensor given as features must be (B, D), got {tuple(value.shape)}")
        return ModalityFeatures(pooled=value)
    pooled = getattr(value, "pooled", None)
    if pooled is None:
        raise TypeError(f"cannot read {type(value).__name__} as modality features (no .pooled)")
    return ModalityFeatures(
        pooled=pooled,
        tokens=getattr(value, "tokens", None),
        mask=getattr(value, "mask", None),
        grid=getattr(value, "grid", None),
    )


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens: ``(B, T, D)``, mask ``(B, T)`` bool -> ``(B, D)``."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class Fusion(nn.Module):
    """Base class: ``forward(features: dict[str, ModalityFeatures | Tensor]) -> (B, out_dim)``.

    ``level`` names where the modalities meet: ``"feature"`` (early), ``"decision"`` (late) or
    ``"structure"`` (intermediate). ``modalities`` are the keys the module reads; other keys in
    the dict are ignored.
    """

    level: str = ""
    out_dim: int
    modalities: tuple[str, ...]

    def _read(self, features: Mapping[str, object]) -> dict[str, ModalityFeatures]:
        missing = [name for name in self.modalities if name not in features]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs modalities {list(self.modalities)}, missing {missing}"
            )
        return {name: as_features(features[name]) for name in self.modalities}
