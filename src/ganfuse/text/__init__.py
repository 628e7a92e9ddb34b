"""Text encoders: ``build_text_encoder("minilm" | "small" | model path)`` -> :class:`TextEncoder`."""

from __future__ import annotations

from ganfuse.text.encoders import (
    SentenceEncoder,
    SmallTextEncoder,
    TextEncoder,
    TextFeatures,
    WordTokenizer,
    build_text_encoder,
)

__all__ = [
    "SentenceEncoder",
    "SmallTextEncoder",
    "TextEncoder",
    "TextFeatures",
    "WordTokenizer",
    "build_text_encoder",
]
