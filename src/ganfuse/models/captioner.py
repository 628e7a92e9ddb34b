"""Image-to-text generation: a GRU caption decoder conditioned on the image encoder's features.

In: images ``(B, 3, S, S)`` in ``[-1, 1]``. Out: captions (greedy decoding), or, for training with
teacher forcing, next-token logits ``(B, L, V)``. The image's pooled vector sets the GRU's first
hidden state and is fed again with every token, so the decoder cannot drift away from the image
over a long caption.

With ``attention`` the decoder also reads the encoder's patch tokens ``(B, T, D)`` (one per cell of
its last feature map): at every step the GRU state queries them with multi-head attention and the
next token is predicted from the state plus what it read. One pooled vector of a scene of four
objects has to hold every object at once; attention lets each step look up the object it is
about to name (measured on ``scenes`` in :mod:`ganfuse.multimodal.scene_captioning`).

A decoder can be conditioned on what kind of caption to write: the vocabulary then holds one start
token ``<kind:NAME>`` per kind (:func:`kind_token`), which replaces ``<bos>`` as the first input.

Tokens keep their leading space (``" red"``, ``","``, ``"-"``), so decoding is a plain
concatenation and reproduces punctuation and hyphens exactly: what the decoder writes can be
parsed back by :func:`ganfuse.data.shapes.parse_caption`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ganfuse.errors import ConfigError, UserError
from ganfuse.models.encoders import ImageEncoder

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
_TOKEN = re.compile(r"\s*(?:[^\W_]+|\S)")
_KIND_PREFIX, _KIND_SUFFIX = "<kind:", ">"


def kind_token(kind: str) -> str:
    """The start token of a caption of ``kind``: ``"list"`` -> ``"<kind:list>"``. Text never
    tokenises to it (:func:`caption_tokens` splits ``<`` off), so it cannot clash with a word."""
    return f"{_KIND_PREFIX}{kind}{_KIND_SUFFIX}"


def caption_tokens(text: str) -> list[str]:
    """``"a red disc, top-left"`` -> ``["a", " red", " disc", ",", " top", "-", "left"]``:
    lower-cased words and single punctuation marks, a leading space kept as one ``" "``."""
    tokens = []
    for match in _TOKEN.findall(text.strip().lower()):
        word = match.lstrip()
        tokens.append((" " + word) if len(word) < len(match) else word)
    return tokens


class CaptionVocab:
    """Token strings <-> ids; ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``."""

    pad, bos, eos = 0, 1, 2

    def __init__(self, tokens: Sequence[str]):
        self.tokens: list[str] = list(SPECIALS) + [
            t for t in dict.fromkeys(tokens) if t not in SPECIALS
        ]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CaptionVocab:
        """Every token of ``texts``, most frequent first (ties alphabetical)."""
        counts = Counter(t for text in texts for t in caption_tokens(text))
        return cls(sorted(counts, key=lambda t: (-counts[t], t)))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forcing pairs ``(inputs, targets)``, each ``(B, L)`` int64, pad 0:
        ``inputs = <bos> t1 .. tn``, ``targets = t1 .. tn <eos>``."""
        rows = [[self.index.get(t, 3) for t in caption_tokens(text)] for text in texts]
        inputs = pad_sequence([torch.tensor([self.bos, *r]) for r in rows], batch_first=True)
        targets = pad_sequence([torch.tensor([*r, self.eos]) for r in rows], batch_first=True)
        return inputs, targets

    def decode(self, ids: Sequence[int]) -> str:
        """Ids up to the first ``<eos>`` (specials and kind tokens dropped) -> text."""
        words = []
        for i in ids:
            if i == self.eos:
                break
            if i >= len(SPECIALS) and not self.tokens[i].startswith(_KIND_PREFIX):
                words.append(self.tokens[i])
        return "".join(words).strip()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The caption kinds this vocabulary has a start token for (:func:`kind_token`)."""
        return tuple(
            t[len(_KIND_PREFIX) : -len(_KIND_SUFFIX)]
            for t in self.tokens
            if t.startswith(_KIND_PREFIX) and t.endswith(_KIND_SUFFIX)
        )

    def start_id(self, kind: str | None) -> int:
        """The first input of a caption of ``kind`` (``<bos>`` for ``None``)."""
        if kind is None:
            return self.bos
        token = kind_token(kind)
        if token not in self.index:
            known = ", ".join(self.kinds) or "none (an unconditioned decoder)"
            raise UserError(f"this captioner has no caption kind {kind!r}; its kinds: {known}")
        return self.index[token]


class CaptionDecoder(nn.Module):
    """``image (B, D)``, ``tokens (B, L)`` -> logits ``(B, L, V)``; a one-layer GRU.

    With ``token_dim`` set, ``forward`` and ``greedy`` also take the image's patch tokens
    ``patches (B, T, token_dim)`` and each GRU state attends over them (``heads`` heads; ``hidden``
    must divide by ``heads``)."""

    def __init__(
        self,
        vocab_size: int,
        image_dim: int,
        embed_dim: int = 64,
        hidden: int = 256,
        token_dim: int | None = None,
        heads: int = 4,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.image_in = nn.Linear(image_dim, embed_dim)
        self.init_hidden = nn.Linear(image_dim, hidden)
        self.gru = nn.GRU(2 * embed_dim, hidden, batch_first=True)
        self.attention = None
        if token_dim is not None:
            if hidden % heads:
                raise ConfigError(
                    f"decoder_hidden ({hidden}) must be divisible by the {heads} attention heads"
                )
            self.attention = nn.MultiheadAttention(
                hidden, heads, kdim=token_dim, vdim=token_dim, batch_first=True
            )
            self.mix = nn.Sequential(
                nn.LayerNorm(2 * hidden), nn.Linear(2 * hidden, hidden), nn.GELU()
            )
        self.out = nn.Linear(hidden, vocab_size)

    def _inputs(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        condition = self.image_in(image)[:, None, :].expand(-1, tokens.shape[1], -1)
        return torch.cat([self.embedding(tokens), condition], dim=-1)

    def _logits(self, states: torch.Tensor, patches: torch.Tensor | None) -> torch.Tensor:
        """GRU states ``(B, L, H)`` -> logits ``(B, L, V)``, reading ``patches`` when attending."""
        if self.attention is None:
            return self.out(states)
        if patches is None:
            raise ValueError("this decoder attends over the image's patch tokens; pass patches")
        read, _ = self.attention(states, patches, patches, need_weights=False)
        return self.out(states + self.mix(torch.cat([states, read], dim=-1)))

    def forward(
        self, image: torch.Tensor, tokens: torch.Tensor, patches: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = torch.tanh(self.init_hidden(image))[None]
        states, _ = self.gru(self._inputs(image, tokens), hidden)
        return self._logits(states, patches)

    @torch.no_grad()
    def greedy(
        self,
        image: torch.Tensor,
        bos: int | torch.Tensor,
        eos: int,
        max_length: int = 32,
        patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Most likely token at each step until every row has written ``eos``: ``(B, <=max_length)``.
        ``bos`` is the first input: one id, or one per row ``(B,)`` (a kind token each)."""
        hidden = torch.tanh(self.init_hidden(image))[None]
        token = torch.as_tensor(bos, dtype=torch.int64, device=image.device)
        token = token.expand(image.shape[0]).reshape(-1, 1).clone()
        done = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
        written = []
        for _ in range(max_length):
            state, hidden = self.gru(self._inputs(image, token), hidden)
            token = self._logits(state, patches).argmax(dim=-1)
            written.append(token)
            done |= token[:, 0] == eos
            if bool(done.all()):
                break
        return torch.cat(written, dim=1)


class Captioner(nn.Module):
    """Image encoder + :class:`CaptionDecoder` + :class:`CaptionVocab`.

    ``attention``: the decoder attends over the encoder's patch tokens. ``max_length``: the most
    tokens a greedy caption may have. A vocabulary with kind tokens makes a kind-conditioned
    captioner (:attr:`kinds`); its captions are of ``default_kind`` unless asked otherwise."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        vocab: CaptionVocab,
        embed_dim: int = 64,
        hidden: int = 256,
        attention: bool = False,
        max_length: int = 32,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.vocab = vocab
        self.max_length = max_length
        token_dim = image_encoder.token_dim if attention else None
        self.decoder = CaptionDecoder(len(vocab), image_encoder.dim, embed_dim, hidden, token_dim)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The caption kinds the decoder was trained to write (empty: unconditioned)."""
        return self.vocab.kinds

    @property
    def default_kind(self) -> str | None:
        """``list`` where trained (the most informative), else the first kind; ``None`` when
        unconditioned."""
        return "list" if "list" in self.kinds else (self.kinds[0] if self.kinds else None)

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.image_encoder(images)
        return features.pooled, features.tokens if self.decoder.attention is not None else None

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``(B, 3, S, S)``, ``(B, L)`` (first column ``<bos>`` or a kind token)
        -> next-token logits ``(B, L, V)``."""
        pooled, patches = self._features(images)
        return self.decoder(pooled, tokens, patches)

    @torch.no_grad()
    def caption(
        self, images: torch.Tensor, max_length: int | None = None, kind: str | None = None
    ) -> list[str]:
        """Greedy captions of ``(B, 3, S, S)`` images in [-1, 1]; ``kind`` for a kind-conditioned
        captioner (default :attr:`default_kind`)."""
        start = self.vocab.start_id(kind if kind is not None else self.default_kind)
        pooled, patches = self._features(images)
        ids = self.decoder.greedy(
            pooled, start, self.vocab.eos, max_length or self.max_length, patches
        )
        return [self.vocab.decode(row) for row in ids.tolist()]
