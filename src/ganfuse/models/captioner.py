"""Image-to-text generation: a GRU caption decoder conditioned on the image encoder's vector.

In: images ``(B, 3, S, S)`` in ``[-1, 1]``. Out: captions (greedy decoding), or, for training with
teacher forcing, next-token logits ``(B, L, V)``. The image's pooled vector sets the GRU's first
hidden state and is fed again with every token, so the decoder cannot drift away from the image
over a long caption.

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

from ganfuse.models.encoders import ImageEncoder

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
_TOKEN = re.compile(r"\s*(?:[^\W_]+|\S)")


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
        """Ids up to the first ``<eos>`` (specials dropped) -> text."""
        words = []
        for i in ids:
            if i == self.eos:
                break
            if i >= len(SPECIALS):
                words.append(self.tokens[i])
        return "".join(words).strip()


class CaptionDecoder(nn.Module):
    """``image (B, D)``, ``tokens (B, L)`` -> logits ``(B, L, V)``; a one-layer GRU."""

    def __init__(self, vocab_size: int, image_dim: int, embed_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.image_in = nn.Linear(image_dim, embed_dim)
        self.init_hidden = nn.Linear(image_dim, hidden)
        self.gru = nn.GRU(2 * embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def _inputs(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        condition = self.image_in(image)[:, None, :].expand(-1, tokens.shape[1], -1)
        return torch.cat([self.embedding(tokens), condition], dim=-1)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.init_hidden(image))[None]
        states, _ = self.gru(self._inputs(image, tokens), hidden)
        return self.out(states)

    @torch.no_grad()
    def greedy(self, image: torch.Tensor, bos: int, eos: int, max_length: int = 32) -> torch.Tensor:
        """Most likely token at each step until every row has written ``eos``: ``(B, <=max_length)``."""
        hidden = torch.tanh(self.init_hidden(image))[None]
        token = torch.full((image.shape[0], 1), bos, dtype=torch.int64, device=image.device)
        done = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
        written = []
        for _ in range(max_length):
            state, hidden = self.gru(self._inputs(image, token), hidden)
            token = self.out(state).argmax(dim=-1)
            written.append(token)
            done |= token[:, 0] == eos
            if bool(done.all()):
                break
        return torch.cat(written, dim=1)


class Captioner(nn.Module):
    """Image encoder + :class:`CaptionDecoder` + :class:`CaptionVocab`."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        vocab: CaptionVocab,
        embed_dim: int = 64,
        hidden: int = 256,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.vocab = vocab
        self.decoder = CaptionDecoder(len(vocab), image_encoder.dim, embed_dim, hidden)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``(B, 3, S, S)``, ``(B, L)`` -> next-token logits ``(B, L, V)``."""
        return self.decoder(self.image_encoder(images).pooled, tokens)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_length: int = 32) -> list[str]:
        """Greedy captions of ``(B, 3, S, S)`` images in [-1, 1]."""
        ids = self.decoder.greedy(
            self.image_encoder(images).pooled, self.vocab.bos, self.vocab.eos, max_length
        )
        return [self.vocab.decode(row) for row in ids.tolist()]
