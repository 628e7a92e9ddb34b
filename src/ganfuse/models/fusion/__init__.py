"""Fusion modules: a dict of per-modality features in, one fused tensor ``(B, out_dim)`` out.

=================== ========== =====================================================
name                level      how the modalities meet
=================== ========== =====================================================
``early``           feature    concatenated pooled vectors, then an MLP
``late-mean``       decision   per-modality heads, logits averaged
``late-weighted``   decision   per-modality heads, learned softmax weights
``late-stacking``   decision   per-modality heads, a linear layer over all logits
``cross-attention`` structure  text tokens <-> image patches co-attention
``gated``           structure  gated multimodal unit (per-dimension modality gates)
``film``            structure  text predicts scale/shift of image feature maps
``low-rank``        structure  low-rank bilinear (tensor) product, LMF
=================== ========== =====================================================

Each class lives in its own file and can be used alone; :func:`build_fusion` builds one by name
from the encoders' widths, which is what a config does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

from ganfuse.errors import ConfigError
from ganfuse.models.fusion.base import Fusion, ModalityFeatures, as_features, masked_mean
from ganfuse.models.fusion.cross_attention import CrossAttentionFusion
from ganfuse.models.fusion.early import EarlyFusion
from ganfuse.models.fusion.film import FiLMFusion
from ganfuse.models.fusion.gated import GatedFusion
from ganfuse.models.fusion.late import LateFusion, combine_decisions
from ganfuse.models.fusion.low_rank import LowRankFusion

__all__ = [
    "FUSION_LEVELS",
    "CrossAttentionFusion",
    "EarlyFusion",
    "FiLMFusion",
    "Fusion",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "ModalityFeatures",
    "ModalitySpec",
    "as_features",
    "build_fusion",
    "combine_decisions",
    "masked_mean",
]

FUSION_LEVELS: dict[str, str] = {
    "early": "feature",
    "late-mean": "decision",
    "late-weighted": "decision",
    "late-stacking": "decision",
    "cross-attention": "structure",
    "gated": "structure",
    "film": "structure",
    "low-rank": "structure",
}


@dataclass(frozen=True)
class ModalitySpec:
    """What an encoder gives: pooled width, token width (``None``: no tokens), patch grid."""

    pooled_dim: int
    token_dim: int | None = None
    grid: tuple[int, int] | None = None


def _call(cls: type, options: Mapping[str, object], **required) -> Fusion:
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"} - set(required)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    return cls(**required, **options)


def build_fusion(
    name: str,
    specs: Mapping[str, ModalitySpec],
    out_dim: int,
    image_key: str = "image",
    text_key: str = "text",
    **options,
) -> Fusion:
    """Build fusion ``name`` for encoders described by ``specs``.

    ``out_dim`` is the fused width; for the late (decision-level) fusions it is the number of
    decision logits, since their output *is* the decision. ``options`` are the class's keyword
    arguments (``hidden``, ``rank``, ``heads``, ``layers``, ``blocks``, ``channels``, ``dim``).
    """
    pooled = {key: spec.pooled_dim for key, spec in specs.items()}
    if name == "early":
        return _call(EarlyFusion, options, in_dims=pooled, out_dim=out_dim)
    if name.startswith("late-") and name in FUSION_LEVELS:
        return _call(LateFusion, options, in_dims=pooled, out_dim=out_dim, rule=name[5:])
    if name == "gated":
        return _call(GatedFusion, options, in_dims=pooled, out_dim=out_dim)
    if name == "low-rank":
        return _call(LowRankFusion, options, in_dims=pooled, out_dim=out_dim)
    if name in ("cross-attention", "film"):
        image, text = specs[image_key], specs[text_key]
        if image.token_dim is None or image.grid is None:
            raise ConfigError(f"fusion {name!r} needs an image encoder that gives a patch grid")
        if name == "film":
            return _call(
                FiLMFusion,
                options,
                target_dim=image.token_dim,
                condition_dim=text.pooled_dim,
                condition_token_dim=text.token_dim,
                grid=image.grid,
                out_dim=out_dim,
                target_key=image_key,
                condition_key=text_key,
            )
        if text.token_dim is None:
            raise ConfigError(
                "fusion 'cross-attention' needs a text encoder that gives token features"
            )
        return _call(
            CrossAttentionFusion,
            options,
            image_token_dim=image.token_dim,
            text_token_dim=text.token_dim,
            out_dim=out_dim,
            image_key=image_key,
            text_key=text_key,
        )
    raise ConfigError(f"unknown fusion {name!r}; choose one of {', '.join(FUSION_LEVELS)}")
