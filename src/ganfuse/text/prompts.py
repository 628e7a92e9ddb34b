"""Prompts -> the condition tensor of a text-to-image model -> a learned text vector.

A :class:`PromptEncoder` turns prompts into the *condition tensor*:

- a frozen sentence encoder (MiniLM by default): float ``(B, E)`` sentence embeddings;
- the small trainable encoder: int64 ``(B, T)`` word ids, 0 at padding.

Inside G and D the module of :func:`build_conditioner` turns it into a learned text vector
``c (B, cond_dim)``. For embeddings that is standardisation with the training captions' statistics
followed by a learned MLP: MiniLM's embeddings of captions that differ only in position have
cosine 0.96, and standardising spreads them apart (a linear probe then reads every attribute,
position included, from them). For word ids it is :class:`SmallTextEncoder`'s pooled output.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ganfuse.errors import UserError
from ganfuse.text.cache import cached_embeddings
from ganfuse.text.encoders import (
    SMALL_NAME,
    SentenceEncoder,
    SmallTextEncoder,
    TextFeatures,
    WordTokenizer,
    build_text_encoder,
    split_words,
)


@dataclass
class TextSpec:
    """What a t2i model's condition tensor is; stored in the config so a run rebuilds it.

    ``encoder``: ``"small"`` (word ids) or a sentence-transformers name/path (embeddings of
    width ``embed_dim``). ``vocab``/``max_length``: the small encoder's words and word limit.
    """

    encoder: str
    embed_dim: int = 0
    vocab: list[str] = field(default_factory=list)
    max_length: int = 32

    @property
    def kind(self) -> str:
        return "tokens" if self.encoder == SMALL_NAME else "embedding"


class PromptError(UserError):
    """A prompt that cannot be turned into a condition (empty, not a string)."""


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """Reject what no encoder can read: not a list of strings, or an empty/blank prompt."""
    if isinstance(prompts, str):
        raise PromptError("prompts must be a list of strings, got a single string")
    prompts = list(prompts)
    if not prompts:
        raise PromptError("no prompts given; pass at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise PromptError(f"prompt {i} is a {type(prompt).__name__}, not text")
        if not prompt.strip():
            raise PromptError(f"prompt {i} is empty; describe the image, e.g. 'a red circle'")
    return prompts


class PromptEncoder:
    """Texts -> the condition tensor of a t2i model: ``(B, E)`` float32 for a frozen sentence
    encoder, ``(B, T)`` int64 word ids (0 = padding) for the small encoder. On CPU.

    The sentence encoder is loaded on first use (MiniLM takes seconds to load), and
    :meth:`encode_many` serves a dataset's embeddings from the text embedding cache, so a run
    encodes its captions once.
    """

    def __init__(self, spec: TextSpec):
        self.spec = spec
        self._encoder: SentenceEncoder | None = None
        self._tokenizer = WordTokenizer(spec.vocab)

    @property
    def sentence_encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = build_text_encoder(self.spec.encoder)
        return self._encoder

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = check_prompts(prompts)
        if self.spec.kind == "embedding":
            return self.sentence_encoder.encode_cached(prompts).pooled.float().cpu()
        ids, _ = self._tokenizer.encode(prompts, self.spec.max_length)
        unknown = [p for p, row in zip(prompts, ids, strict=True) if bool((row <= 1).all())]
        if unknown:
            warnings.warn(
                f"{len(unknown)} prompt(s) have no word the model was trained on, e.g. "
                f"{unknown[0][:60]!r}; their images follow no text",
                stacklevel=2,
            )
        new_words = sorted({w for p in prompts if p not in unknown for w in split_words(p)
                            if w not in self._tokenizer.index})
        if new_words:
            shown = ", ".join(repr(w) for w in new_words[:8])
            warnings.warn(
                f"words the model was never trained on are ignored: {shown}"
                f"{' ...' if len(new_words) > 8 else ''} (its vocabulary has {len(self.spec.vocab)} words)",
                stacklevel=2,
            )
        return ids

    def encode_many(self, texts: Sequence[str]) -> torch.Tensor:
        """Conditions of many texts (a dataset's captions), through the text embedding cache for
        sentence encoders: ``(N, E)`` float32 or ``(N, T)`` int64, rows in the order of ``texts``."""
        texts = check_prompts(texts)
        if self.spec.kind == "tokens":
            return self._tokenizer.encode(texts, self.spec.max_length)[0]
        return cached_embeddings(
            self.spec.encoder, texts, lambda unique: self.sentence_encoder.encode_cached(unique).pooled
        )


class EmbeddingConditioner(nn.Module):
    """Frozen sentence embeddings ``(B, E)`` -> text vector ``(B, cond_dim)``.

    Standardised per dimension with the training captions' mean and std (buffers, saved with the
    weights; set by :meth:`set_statistics`), then a learned two-layer MLP.
    """

    def __init__(self, embed_dim: int, cond_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("std", torch.ones(embed_dim))
        self.net = nn.Sequential(
            nn.Linear(embed_dim, cond_dim), nn.LeakyReLU(0.2), nn.Linear(cond_dim, cond_dim)
        )

    @torch.no_grad()
    def set_statistics(self, embeddings: torch.Tensor) -> None:
        """Standardise with the statistics of ``embeddings`` ``(N, E)``."""
        self.mean.copy_(embeddings.mean(0))
        self.std.copy_(embeddings.std(0).clamp(min=1e-4))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if not cond.is_floating_point():
            raise ValueError(f"this model takes sentence embeddings, got a {cond.dtype} tensor")
        return self.net((cond.float() - self.mean) / self.std)


class TokenConditioner(nn.Module):
    """Word ids ``(B, T)`` int64 (0 = padding) -> ``(B, cond_dim)``: the pooled output of a
    :class:`SmallTextEncoder` (64-d word embeddings, 64-d bidirectional GRU)."""

    def __init__(self, spec: TextSpec, cond_dim: int):
        super().__init__()
        self.encoder = SmallTextEncoder(spec.vocab, 64, 64, cond_dim, spec.max_length)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.features(ids).pooled

    def features(self, ids: torch.Tensor) -> TextFeatures:
        """Pooled ``(B, cond_dim)``, per-word ``tokens (B, T, 128)`` and ``mask (B, T)`` (True at
        words), for the models that attend to words."""
        if ids.dtype != torch.int64:
            raise ValueError(f"this model takes word ids (int64), got a {ids.dtype} tensor")
        return self.encoder.encode_ids(ids)


def build_conditioner(spec: TextSpec, cond_dim: int) -> EmbeddingConditioner | TokenConditioner:
    """The module of G or D that turns ``spec``'s condition tensor into ``(B, cond_dim)``."""
    if spec.kind == "tokens":
        return TokenConditioner(spec, cond_dim)
    return EmbeddingConditioner(spec.embed_dim, cond_dim)
