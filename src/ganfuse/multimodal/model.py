"""A fusion model is ``encoders (dict) -> fusion -> heads``, composed from a :class:`FuseConfig`.

:class:`FusionModel` takes ``{"image": (B_img, 3, S, S) in [-1, 1], "text": list of B strings}``,
optionally with ``pairs`` ``(B,)`` saying which image each text goes with (so one image is
encoded once and fused with several captions or questions), and returns ``{task: (B, K_task)}``
logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.encoders import ImageEncoder
from ganfuse.models.fusion import Fusion, ModalityFeatures, ModalitySpec, as_features, build_fusion
from ganfuse.models.heads import DecisionSplit, TaskHeads
from ganfuse.multimodal.config import FuseConfig
from ganfuse.text import TextEncoder, build_text_encoder


class FusionModel(nn.Module):
    """``encoders`` (a dict of modules, each ``inputs[name] -> features``), one ``fusion`` and
    ``heads`` (fused ``(B, D)`` -> ``{task: (B, K)}``)."""

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: Fusion, heads: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.heads = heads

    def encode(self, inputs: Mapping[str, object]) -> dict[str, ModalityFeatures]:
        """Each encoder's features of its own input, ``{name: ModalityFeatures}``. An input that
        already is :class:`ModalityFeatures` (a frozen encoder's, computed once) is passed through."""
        return {
            name: value if isinstance(value, ModalityFeatures) else as_features(enc(value))
            for name, enc in self.encoders.items()
            for value in [inputs[name]]
        }

    def forward(
        self, inputs: Mapping[str, object], pairs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``pairs`` ``(B,)``: row ``i`` fuses image ``pairs[i]`` with text ``i``."""
        return self.fuse(self.encode(inputs), pairs)

    def fuse(
        self, features: dict[str, ModalityFeatures], pairs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The heads' logits from encoded ``features`` (:meth:`encode`); ``pairs`` as in
        :meth:`forward`."""
        if pairs is not None:
            features = {**features, "image": features["image"].select(pairs)}
        return self.heads(self.fusion(features))


def build_text(config: FuseConfig, vocab: list[str] | None = None) -> TextEncoder:
    """The config's text encoder; ``vocab`` fixes the small encoder's words."""
    if config.text_encoder == "small":
        return build_text_encoder(
            "small",
            vocab=vocab,
            embed_dim=config.text_embed_dim,
            hidden_dim=config.text_hidden_dim,
            dim=config.text_dim,
            pooling=config.text_pooling,
        )
    return build_text_encoder(config.text_encoder)


def build_image_encoder(config: FuseConfig) -> ImageEncoder:
    return ImageEncoder(
        dim=config.image_dim,
        widths=tuple(config.image_widths),
        image_size=config.image_size,
        factorized=config.image_factorized,
    )


def build_fusion_model(
    config: FuseConfig,
    task_sizes: Mapping[str, int],
    text_encoder: TextEncoder | None = None,
    vocab: list[str] | None = None,
) -> FusionModel:
    """Image encoder + text encoder + ``config.fusion`` + one head per task in ``task_sizes``.

    A decision-level fusion emits all the tasks' logits itself; its heads only split them.
    """
    image = build_image_encoder(config)
    text = text_encoder if text_encoder is not None else build_text(config, vocab)
    specs = {
        "image": image.spec,
        "text": ModalitySpec(pooled_dim=text.dim, token_dim=text.token_dim),
    }
    decision_level = config.fusion.startswith("late-")
    out_dim = sum(task_sizes.values()) if decision_level else config.fused_dim
    fusion = build_fusion(config.fusion, specs, out_dim, **config.fusion_options)
    heads = (
        DecisionSplit(task_sizes)
        if decision_level
        else TaskHeads(config.fused_dim, task_sizes, config.head_hidden)
    )
    return FusionModel({"image": image, "text": text}, fusion, heads)
