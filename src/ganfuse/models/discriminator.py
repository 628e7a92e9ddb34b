"""The one output type of every discriminator, and the contract of the text-conditioned ones.

Every discriminator's ``forward`` returns a :class:`DiscriminatorOutput`, so a training objective
reads ``D(x, cond).logits`` whatever the architecture. Text-conditioned discriminators subclass
:class:`TextDiscriminator`, whose ``forward`` takes the same keywords in every implementation; one
that lacks a capability (embedding heads, say) says so through :attr:`has_embedding` and refuses
with a clear error rather than a ``TypeError`` about an unexpected keyword.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class DiscriminatorOutput(NamedTuple):
    """What a discriminator computed in one pass of its image trunk.

    ``logits (B,)``: the verdict on the given (image, condition) pairs. The rest is filled only
    when asked for, by text-conditioned discriminators: ``mismatch (B,)`` logits of the same images
    with other texts; ``image_embedding``/``text_embedding (B, K)`` unit vectors of a joint space;
    ``text (B, cond_dim)`` the learned text vectors (part of the graph, for MA-GP); ``features``
    the trunk's block outputs, finest first; ``negative_embedding (N, K)`` unit vectors of extra
    texts. ``class_logits (B, K)``: the auxiliary classifier's verdict on the class of each image
    (class-conditional discriminators built with one, AC-GAN style). ``object_logits (B, K, M)``:
    the object discriminator's verdicts on windows around given centres against object
    descriptions (``t2i-words`` with ``text.object_weight``). ``layout_logits (L,)``: the layout
    discriminator's verdicts on object layouts against captions (``text.layout_weight``).
    """

    logits: torch.Tensor
    mismatch: torch.Tensor | None = None
    image_embedding: torch.Tensor | None = None
    text_embedding: torch.Tensor | None = None
    text: torch.Tensor | None = None
    features: list[torch.Tensor] | None = None
    negative_embedding: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None
    object_logits: torch.Tensor | None = None
    layout_logits: torch.Tensor | None = None


class TextDiscriminator(nn.Module):
    """Base of the text-conditioned discriminators: ``forward(x (B, C, H, W), cond, *,
    mismatch=None, embed=False, features=False, negatives=None) -> DiscriminatorOutput``."""

    has_embedding: bool = False  # whether ``embed=True`` / ``negatives=`` can be served

    def forward(self, x: torch.Tensor, cond: torch.Tensor, *, mismatch: torch.Tensor | None = None,
                embed: bool = False, features: bool = False,
                negatives: torch.Tensor | None = None) -> DiscriminatorOutput:  # pragma: no cover
        raise NotImplementedError
