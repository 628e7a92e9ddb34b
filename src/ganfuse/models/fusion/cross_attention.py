"""Structure-level fusion by cross-attention between text tokens and image patches.

The modalities meet token by token, inside the representation: every text token attends to the
image patches and every image patch attends to the text tokens (both directions, in the spirit
of ViLBERT's co-attention), so a word such as "red" can look at the patch that holds the shape.

In: ``{"image": tokens (B, N, Di) patch grid, "text": tokens (B, T, Dt) + mask (B, T)}``;
out: ``(B, out_dim)`` from the mean text token and the mean patch after the last layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ganfuse.models.fusion.base import Fusion, masked_mean


class CoAttentionLayer(nn.Module):
    """One pre-norm layer: text <- image attention, image <- text attention, then an MLP each.

    ``text (B, T, d)``, ``image (B, N, d)``, ``text_mask (B, T)`` bool (True = real token) ->
    the updated ``(text, image)``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_tq, self.norm_ik = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_iq, self.norm_tk = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.text_from_image = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.image_from_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )
        self.image_mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )

    def forward(
        self, text: torch.Tensor, image: torch.Tensor, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        padding = None if text_mask is None else ~text_mask
        image_kv = self.norm_ik(image)
        text_kv = self.norm_tk(text)
        text = (
            text
            + self.text_from_image(self.norm_tq(text), image_kv, image_kv, need_weights=False)[0]
        )
        image = (
            image
            + self.image_from_text(
                self.norm_iq(image), text_kv, text_kv, key_padding_mask=padding, need_weights=False
            )[0]
        )
        return text + self.text_mlp(text), image + self.image_mlp(image)


class CrossAttentionFusion(Fusion):
    """Project both token sets to ``dim``, apply ``layers`` co-attention layers, pool, project."""

    level = "structure"

    def __init__(
        self,
        image_token_dim: int,
        text_token_dim: int,
        out_dim: int = 256,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
        image_key: str = "image",
        text_key: str = "text",
    ):
        super().__init__()
        self.modalities = (image_key, text_key)
        self.image_key, self.text_key = image_key, text_key
        self.out_dim = out_dim
        self.image_in = nn.Linear(image_token_dim, dim)
        self.text_in = nn.Linear(text_token_dim, dim)
        self.layers = nn.ModuleList(CoAttentionLayer(dim, heads) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, out_dim), nn.ReLU())

    def forward(self, features: Mapping[str, object]) -> torch.Tensor:
        feats = self._read(features)
        image, text = feats[self.image_key], feats[self.text_key]
        if image.tokens is None or text.tokens is None:
            raise ValueError("cross-attention fusion needs token features from both encoders")
        mask = text.mask
        t, v = self.text_in(text.tokens), self.image_in(image.tokens)
        for layer in self.layers:
            t, v = layer(t, v, mask)
        return self.out(torch.cat([masked_mean(t, mask), v.mean(dim=1)], dim=-1))
