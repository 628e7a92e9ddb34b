"""Aligning the dual encoder's image and text embeddings without pairs: a modality discriminator,
cycle consistency across modalities, and pseudo-pairs from reciprocal nearest neighbours.

The contrastive dual encoder (:mod:`ganfuse.multimodal.zeroshot`) needs image-caption *pairs*.
This module holds what it can learn from images and captions that are *not* paired, and the
bookkeeping of which training images keep their captions:

- :func:`paired_split`: a fraction of the training images keep their captions as pairs; the rest
  are halved, one half used as images without captions, the other half's captions used as texts
  without images. No unpaired caption ever belongs to an unpaired image, so no term can find the
  true pairing of an unpaired item, even by accident.
- **adversarial alignment** (ACMR, Wang et al. 2017): a :class:`ModalityDiscriminator` on the
  shared space tells image embeddings (label 1) from text embeddings (label 0); the encoders are
  trained to fool it, either through a gradient reversal layer (Ganin and Lempitsky 2015: one
  optimiser, identity forward, ``-lambda * grad`` backward) or by alternating GAN updates (the
  discriminator's own optimiser step, then the encoders' step against flipped labels,
  ``alternating``, or towards the discriminator's indecision, 1/2 for both modalities:
  ``confusion``, the domain confusion of Tzeng et al. 2015).
  On unpaired data this is distribution matching: the two embedding clouds are made to coincide.
- **cycle consistency** in the shared space (CycleGAN's ``F(G(x)) ~ x`` with nearest-neighbour
  translation across modalities): an image's soft nearest text, whose soft nearest image should
  be the image again; the same from texts.
- **pseudo-pairs**: reciprocal nearest neighbours between unpaired images and the descriptions
  of unpaired captions whose cosine passes a threshold, mined again every few steps with the
  current encoders, train as extra pairs. A description is the set of captions that parse to the
  same thing, and two of its captions are positives of each other's images: the parse is of the
  text alone (the caption grammar), never of an unpaired image.

Embeddings are ``(N, E)``, L2-normalised, throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.base import uint8_to_float
from ganfuse.multimodal.config import ADVERSARIAL_MODES

DISCRIMINATOR_HIDDEN = 256
# Each target of modality_loss: (images', texts') labels.
MODALITY_TARGETS: dict[str, tuple[float, float]] = {
    "true": (1.0, 0.0),
    "flipped": (0.0, 1.0),
    "confusion": (0.5, 0.5),
}
# Adam's beta1 of 0.5 for the discriminator of the alternating modes, as in DCGAN: a smaller
# momentum follows a moving target (the encoders) more closely.
DISCRIMINATOR_BETAS = (0.5, 0.999)
# The fresh modality probe of the evaluation: full-batch Adam steps and learning rate. A probe
# trained to convergence, not a step behind the encoders as a run's own discriminator is: it
# measures what a discriminator *could* tell apart (0.89-0.92 on a contrastive-only shapes run).
PROBE_STEPS = 300
PROBE_LR = 3e-3
# Pseudo-pairs are mined among at most this many unpaired images and captions (embedding them
# every ``pseudo_every`` steps is the cost).
MINING_POOL = 5000


# ---------------------------------------------------------------------------------------------
# Which training images keep their captions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedSplit:
    """Rows of a training split, ``(K,)`` int64 each, sorted and pairwise disjoint: ``paired``
    images keep their captions; ``unpaired_images`` are used without captions; the captions of
    ``unpaired_texts`` are used without their images."""

    paired: torch.Tensor
    unpaired_images: torch.Tensor
    unpaired_texts: torch.Tensor

    @property
    def has_unpaired(self) -> bool:
        return len(self.unpaired_images) > 0 and len(self.unpaired_texts) > 0


def paired_split(num: int, fraction: float, seed: int) -> PairedSplit:
    """Split ``num`` training rows: ``max(1, round(fraction * num))`` paired, chosen by ``seed``
    (a smaller fraction's pairs are inside a larger one's, as for
    :func:`~ganfuse.multimodal.splits.labelled_indices`); of the others, alternately one to the
    images without captions and one to the captions without images."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"paired fraction must be in (0, 1], got {fraction}")
    count = min(num, max(1, round(fraction * num)))
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    rest = order[count:]
    return PairedSplit(
        order[:count].sort().values, rest[0::2].sort().values, rest[1::2].sort().values
    )


# ---------------------------------------------------------------------------------------------
# Adversarial alignment
# ---------------------------------------------------------------------------------------------


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-strength``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, with the gradient reaching ``x`` multiplied by ``-strength``."""
    return GradientReversal.apply(x, strength)


class ModalityDiscriminator(nn.Module):
    """An MLP on the shared space: ``(N, E)`` embeddings -> ``(N,)`` logits of "an image"."""

    def __init__(self, embed_dim: int, hidden: int = DISCRIMINATOR_HIDDEN):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings).squeeze(-1)

    def reset(self, generator: torch.Generator) -> ModalityDiscriminator:
        """Re-initialise every layer from ``generator`` (PyTorch's default uniform bounds), so a
        probe's start does not depend on the global random state; returns itself."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / layer.in_features**0.5
                nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        return self


def modality_loss(
    discriminator: nn.Module,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    target: str = "true",
) -> torch.Tensor:
    """Binary cross-entropy of the modality discriminator, averaged per modality and then over
    the two, so unequal counts weigh the two modalities equally: ``(N, E)``, ``(M, E)`` -> scalar.
    ``target``: ``"true"`` (images labelled 1, texts 0: the discriminator's loss), ``"flipped"``
    (0 and 1: the encoders' GAN target) or ``"confusion"`` (1/2 for both, minus its floor
    ``ln 2``, so 0 when the discriminator cannot tell)."""
    image_logits, text_logits = discriminator(image_emb), discriminator(text_emb)
    image_target, text_target = MODALITY_TARGETS[target]
    on_images = F.binary_cross_entropy_with_logits(
        image_logits, torch.full_like(image_logits, image_target)
    )
    on_texts = F.binary_cross_entropy_with_logits(
        text_logits, torch.full_like(text_logits, text_target)
    )
    loss = 0.5 * (on_images + on_texts)
    return loss - math.log(2.0) if target == "confusion" else loss


@torch.no_grad()
def modality_accuracy(
    discriminator: nn.Module, image_emb: torch.Tensor, text_emb: torch.Tensor
) -> float:
    """Balanced accuracy (mean of the two modalities' accuracies) of telling images (logit > 0)
    from texts; 0.5 is chance, whatever the counts."""
    on_images = (discriminator(image_emb) > 0).double().mean()
    on_texts = (discriminator(text_emb) <= 0).double().mean()
    return float(0.5 * (on_images + on_texts))


class AdversarialAligner:
    """The modality discriminator and how the encoders are trained against it.

    ``grl``: :meth:`encoder_loss` is the discriminator's own loss on gradient-reversed
    embeddings; the discriminator's parameters (:meth:`shared_parameters`) join the encoders' one
    optimiser, which thus lowers the loss for the discriminator and raises it ``weight``-fold for
    the encoders. ``alternating`` and ``confusion``: :meth:`encoder_loss` first takes one step of
    the discriminator's own Adam on the detached embeddings, then returns ``weight`` times the
    flipped-label loss (``alternating``) or the confusion loss (``confusion``) through the
    discriminator with its parameters frozen, so the encoders' optimiser never moves it.
    """

    def __init__(
        self, embed_dim: int, mode: str, weight: float, lr: float, seed: int, d_steps: int = 1
    ):
        if mode not in ADVERSARIAL_MODES:
            raise ValueError(f"adversarial mode must be one of {ADVERSARIAL_MODES}, got {mode!r}")
        self.mode, self.weight, self.d_steps = mode, weight, d_steps
        generator = torch.Generator().manual_seed(seed)
        self.discriminator = ModalityDiscriminator(embed_dim).reset(generator)
        self.optimizer = (
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=DISCRIMINATOR_BETAS)
            if mode != "grl"
            else None
        )
        self.last_loss = float("nan")  # the discriminator's loss at its last step

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters the encoders' optimiser must also update: the discriminator's under
        ``grl``, none otherwise."""
        return list(self.discriminator.parameters()) if self.mode == "grl" else []

    def encoder_loss(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """The adversarial term to add to the encoders' loss (see the class)."""
        if self.mode == "grl":
            loss = modality_loss(
                self.discriminator,
                reverse_gradient(image_emb, self.weight),
                reverse_gradient(text_emb, self.weight),
            )
            self.last_loss = float(loss.detach())
            return loss
        self.discriminator.requires_grad_(True)
        for _ in range(self.d_steps):
            d_loss = modality_loss(self.discriminator, image_emb.detach(), text_emb.detach())
            self.optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # its gradients are spent
        self.last_loss = float(d_loss.detach())
        self.discriminator.requires_grad_(False)
        target = "flipped" if self.mode == "alternating" else "confusion"
        return self.weight * modality_loss(self.discriminator, image_emb, text_emb, target)


def alignment_loss(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The alignment term of Wang and Isola (2020): the mean squared distance between each image's
    embedding and its caption's, ``(B, E)`` images and the first ``B`` of ``(T, E)`` texts (text
    ``i`` is image ``i``'s), normalised -> scalar in ``[0, 4]`` (``2 - 2 cos`` per pair).

    InfoNCE only ranks a pair above the batch's other pairs; at a temperature of 0.07 a pair at
    cosine 0.95 already ranks first, so nothing closes the last offset between an image and its
    caption, and that offset is what a modality probe reads."""
    batch = len(image_emb)
    return (image_emb - text_emb[:batch]).pow(2).sum(1).mean()


def modality_probe_accuracy(
    fit_images: torch.Tensor,
    fit_texts: torch.Tensor,
    test_images: torch.Tensor,
    test_texts: torch.Tensor,
    seed: int = 0,
    steps: int = PROBE_STEPS,
) -> float:
    """Balanced accuracy on ``test_*`` of a fresh :class:`ModalityDiscriminator` trained
    (full batch, Adam) to tell ``fit_images`` from ``fit_texts``: how far apart the two
    modalities' embeddings still lie (0.5: indistinguishable). All ``(N, E)``."""
    generator = torch.Generator().manual_seed(seed)
    probe = ModalityDiscriminator(fit_images.shape[1]).reset(generator)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR)
    fit_images, fit_texts = fit_images.detach().float(), fit_texts.detach().float()
    with torch.enable_grad():
        for _ in range(steps):
            loss = modality_loss(probe, fit_images, fit_texts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return modality_accuracy(probe, test_images.float(), test_texts.float())


# ---------------------------------------------------------------------------------------------
# Cycle consistency across modalities
# ---------------------------------------------------------------------------------------------


def soft_nearest(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Each query's soft nearest key: ``softmax(scale * q k^T) k``, ``(Q, E)``, ``(K, E)`` ->
    ``(Q, E)`` (not normalised; the hard nearest key as ``scale`` grows)."""
    return (scale * queries @ keys.t()).softmax(dim=1) @ keys


def cycle_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: float) -> torch.Tensor:
    """Cycle consistency across modalities, both ways: image -> its soft nearest text -> that
    text's soft nearest image, which should be the image again (``1 - cos``), and text -> image
    -> text; the mean of the two means. ``(N, E)`` images, ``(M, E)`` texts -> scalar in
    ``[0, 2]``; 0 when every round trip returns to its start (a round trip may land on an
    identical duplicate: two images of the same thing need not be told apart)."""

    def round_trip(start: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        back = soft_nearest(soft_nearest(start, other, scale), start, scale)
        return (1.0 - F.cosine_similarity(back, start, dim=-1)).mean()

    return 0.5 * (round_trip(image_emb, text_emb) + round_trip(text_emb, image_emb))


def view_loss(embeddings: torch.Tensor, view_embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    """SimCLR's NT-Xent between two views of the same images (Chen et al. 2020): row ``i`` of
    ``view_embeddings`` is the positive of row ``i`` of ``embeddings`` and every other row of
    either is a negative. ``(B, E)`` each, normalised -> scalar. It needs no caption, so unpaired
    images teach the image encoder to tell scenes apart by what survives the view change."""
    both = torch.cat([embeddings, view_embeddings])  # (2B, E)
    logits = scale * both @ both.t()
    logits = logits.masked_fill(torch.eye(len(both), dtype=torch.bool), float("-inf"))
    batch = len(embeddings)
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
    return F.cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------
# Unpaired data and pseudo-pairs
# ---------------------------------------------------------------------------------------------


@dataclass
class UnpairedPool:
    """What a run may use of its unpaired data: ``images`` uint8 ``(N, 3, S, S)`` (no captions),
    ``texts`` (no images) and, per text, ``text_keys``: what the caption says, as its parse
    (captions with equal keys are interchangeable)."""

    images: torch.Tensor
    texts: list[str]
    text_keys: list[Hashable]

    def draw(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, list[str]]:
        """``count`` random images, float ``(count, 3, S, S)`` in [-1, 1], and ``count`` random
        texts, drawn independently."""
        images = torch.randint(len(self.images), (count,), generator=generator)
        texts = torch.randint(len(self.texts), (count,), generator=generator)
        return uint8_to_float(self.images[images]), [self.texts[i] for i in texts.tolist()]


def reciprocal_pairs(
    image_emb: torch.Tensor, text_emb: torch.Tensor, neighbours: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image rows, text rows)``, ``(P,)`` int64 each: image ``i`` and text ``j`` pair when
    ``j`` is ``i``'s nearest text, ``i`` is among ``j``'s ``neighbours`` nearest images and their
    cosine is at least ``threshold`` (``neighbours=1``: mutual nearest neighbours). Each image
    pairs at most once, each text at most ``neighbours`` times."""
    similarity = image_emb @ text_emb.t()  # (N, M)
    best_text = similarity.argmax(dim=1)  # (N,)
    near_images = similarity.topk(min(neighbours, len(image_emb)), dim=0).indices  # (k, M)
    rows = torch.arange(len(image_emb))
    reciprocal = (near_images[:, best_text] == rows).any(dim=0)
    confident = similarity[rows, best_text] >= threshold
    chosen = rows[reciprocal & confident]
    return chosen, best_text[chosen]


class PseudoPairs:
    """Pseudo-pairs of an :class:`UnpairedPool`, mined again by :meth:`mine`.

    The captions that say the same (equal ``text_keys``: the caption grammar's parse) form one
    *description*, embedded as the normalised mean of its captions' embeddings. An image pairs
    with a description by :func:`reciprocal_pairs` (its nearest description, and among that
    description's ``neighbours`` nearest images), among a fixed random subset of at most
    :data:`MINING_POOL` images and captions; a drawn pair takes a random caption of its
    description, so the pair's words vary from draw to draw as the true pairs' do."""

    def __init__(self, pool: UnpairedPool, threshold: float, neighbours: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.pool, self.threshold, self.neighbours = pool, threshold, neighbours
        self.image_rows = torch.randperm(len(pool.images), generator=generator)[:MINING_POOL]
        self.text_rows = torch.randperm(len(pool.texts), generator=generator)[:MINING_POOL]
        self.descriptions: list[Hashable] = list(dict.fromkeys(pool.text_keys))
        index = {key: d for d, key in enumerate(self.descriptions)}
        self.text_description = torch.tensor([index[k] for k in pool.text_keys])  # (T,)
        self.captions_of: list[list[int]] = [[] for _ in self.descriptions]
        for row, d in enumerate(self.text_description.tolist()):
            self.captions_of[d].append(row)
        self.images = torch.zeros(0, dtype=torch.int64)  # rows of pool.images
        self.described = torch.zeros(0, dtype=torch.int64)  # their descriptions
        self.mined = 0  # times mined

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def mine(
        self,
        embed_images: Callable[[torch.Tensor], torch.Tensor],
        embed_texts: Callable[[list[str]], torch.Tensor],
    ) -> int:
        """Replace the pairs by those of the current embeddings; returns their number.
        ``embed_images``: float images -> ``(N, E)``; ``embed_texts``: strings -> ``(M, E)``."""
        image_emb = embed_images(uint8_to_float(self.pool.images[self.image_rows])).float()
        text_emb = embed_texts([self.pool.texts[i] for i in self.text_rows.tolist()]).float()
        described = self.text_description[self.text_rows]  # (M,)
        present = described.unique()  # (D,) sorted
        sums = torch.zeros(len(self.descriptions), text_emb.shape[1]).index_add_(
            0, described, text_emb
        )
        prototypes = F.normalize(sums[present], dim=-1)
        images, descriptions = reciprocal_pairs(
            image_emb, prototypes, self.neighbours, self.threshold
        )
        self.images, self.described = self.image_rows[images], present[descriptions]
        self.mined += 1
        return len(self.images)

    def draw(
        self, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """``count`` random pseudo-pairs (fewer if fewer exist): images float
        ``(B, 3, S, S)``, one random caption of each pair's description, and ``positives``
        ``(B, B)`` bool: text ``j`` says the same as image ``i``'s text."""
        picked = torch.randperm(len(self), generator=generator)[:count]
        described = self.described[picked]
        texts = []
        for d in described.tolist():
            options = self.captions_of[d]
            choice = int(torch.randint(len(options), (1,), generator=generator))
            texts.append(self.pool.texts[options[choice]])
        positives = described[:, None] == described[None, :]
        return uint8_to_float(self.pool.images[self.images[picked]]), texts, positives

    def precision(self, pair_is_true: Callable[[int, str], bool]) -> float:
        """Share of the current pairs that are true, by ``pair_is_true(image row, text)`` on the
        first caption of each pair's description: a diagnostic for reports only; training never
        calls it."""
        if not len(self):
            return float("nan")
        hits = [
            pair_is_true(int(i), self.pool.texts[self.captions_of[d][0]])
            for i, d in zip(self.images.tolist(), self.described.tolist(), strict=True)
        ]
        return sum(hits) / len(hits)


def text_keys(texts: Sequence[str], parse: Callable[[str], Hashable]) -> list[Hashable]:
    """What each caption says (``parse`` of the text alone), memoised over repeated captions."""
    seen: dict[str, Hashable] = {}
    return [seen[t] if t in seen else seen.setdefault(t, parse(t)) for t in texts]
