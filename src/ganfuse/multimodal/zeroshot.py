"""Zero-shot learning with a contrastive dual encoder (CLIP-style), on ``shapes``.

The image encoder and the text encoder each map into one normalised embedding space; training
pulls an image towards its caption and away from the other captions of the batch (InfoNCE, both
directions, with a learned temperature). Nothing is ever trained on a class label, so the model
classifies into any set of classes given as text: here the 21 colour-shape pairs, four of which
(the held-out pairs) never appeared in training, neither as image nor as caption.

- a class's embedding is the normalised mean of the embeddings of its prompts, one per prompt
  template (prompt ensembling, as in open_clip); the templates are every caption template with
  each size and position filled in, so size and position are averaged out;
- retrieval recall@k both ways, where a hit is any retrieved item with the image's attributes
  (several images of the test set share all four attributes, and so do their captions).

Images with the same four attributes are positives of each other's captions in the loss too, so
the batch never pushes apart two equally correct pairs.

With ``world=scenes`` the same dual encoder learns ``scenes`` image-caption pairs: positives are
every (caption, image) pair of the batch the exact judge calls true, ``hard_negatives`` adds the
binding negatives of the batch's captions to the image-to-text denominator, and the scores are
retrieval recall and binding-swap matching (:mod:`ganfuse.multimodal.scene_zeroshot`).

With ``world=folder`` (the user's pairs) or ``world=emoji`` it learns real pairs: positives are
captions of the same text, and the scores are retrieval recall on the training images and on the
held-out ones (:mod:`ganfuse.multimodal.folder_world`), whose captions a frozen pretrained text
encoder (``text_encoder=minilm``) has never seen paired: zero-shot retrieval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.data.base import uint8_to_float
from ganfuse.data.scene_edits import dataset_counterfactual
from ganfuse.data.scenes import ScenesDataset
from ganfuse.data.scenes import parse_caption as parse_scene_caption
from ganfuse.data.shapes import (
    COLOR_SHAPE_CLASSES,
    POSITIONS,
    SIZES,
    ShapesDataset,
    caption_synonyms,
    caption_templates,
    make_caption,
    parse_caption,
)
from ganfuse.errors import ConfigError
from ganfuse.models.encoders import ImageEncoder
from ganfuse.models.fusion import ModalityFeatures
from ganfuse.multimodal.alignment import (
    AdversarialAligner,
    PairedSplit,
    PseudoPairs,
    UnpairedPool,
    alignment_loss,
    cycle_loss,
    modality_accuracy,
    modality_probe_accuracy,
    paired_split,
    text_keys,
    view_loss,
)
from ganfuse.multimodal.checkpoint import (
    RunRecord,
    RunResult,
    count_parameters,
    load_weights,
    prepare_run_folder,
    read_run,
    save_run,
    saved_text_encoder,
)
from ganfuse.multimodal.config import PAIR_WORLDS, FuseConfig
from ganfuse.multimodal.folder_world import (
    Draw,
    PairsData,
    evaluate_pairs,
    pairs_draw,
    train_eval_rows,
    training_texts,
)
from ganfuse.multimodal.loop import optimise, uses_config_threads
from ganfuse.multimodal.model import build_image_encoder, build_text
from ganfuse.multimodal.object_targets import ObjectProbe, cell_targets
from ganfuse.multimodal.scene_zeroshot import (
    SceneArrays,
    caption_truth,
    contrastive_batch,
    evaluate_scenes_split,
)
from ganfuse.multimodal.splits import config_split
from ganfuse.text import SentenceEncoder, TextEncoder
from ganfuse.text.encoders import WordTokenizer, scenes_vocabulary, shapes_vocabulary
from ganfuse.train.augment import translate

MAX_LOGIT_SCALE = math.log(100.0)  # temperature no lower than 0.01, as in CLIP


class DualEncoder(nn.Module):
    """``encode_image``: ``(B, 3, S, S)`` in [-1, 1] -> ``(B, E)``; ``encode_text``: B strings ->
    ``(B, E)``; both L2-normalised. ``logit_scale`` is ``log(1 / temperature)``, learned."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        embed_dim: int = 128,
        init_temperature: float = 0.07,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.dim, embed_dim)
        # An MLP on the text side lets a frozen pretrained encoder's space be bent to the images.
        self.text_proj = nn.Sequential(
            nn.LayerNorm(text_encoder.dim),
            nn.Linear(text_encoder.dim, 2 * embed_dim),
            nn.GELU(),
            nn.Linear(2 * embed_dim, embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_image_features(self.image_encoder(images))

    def embed_image_features(self, features: ModalityFeatures) -> torch.Tensor:
        """The embedding of the image encoder's ``features`` (:meth:`encode_image` in two steps,
        for a loss that also reads the encoder's patch grid)."""
        return F.normalize(self.image_proj(features.pooled), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_encoder(texts).pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale())


def info_nce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor | float,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows: ``(B, E)`` images, ``(T, E)`` texts, both normalised,
    ``T >= B`` -> scalar. Text ``i < B`` is image ``i``'s; texts ``B..T-1`` (hard negatives) only
    join the image-to-text denominators, text-to-image runs over the first ``B`` texts.

    ``positives`` ``(B, T)`` bool marks every pair that counts as a match (diagonal included);
    each row's target is then uniform over its positives, so two images with the same attributes
    are not pushed away from each other's captions. ``None``: the diagonal only (plain CLIP).
    """
    batch = len(image_emb)
    if len(text_emb) < batch:
        raise ValueError(
            f"info_nce needs at least one text per image, got {len(text_emb)} < {batch}"
        )
    logits = scale * image_emb @ text_emb.t()  # (B, T)
    if positives is None:
        targets = torch.arange(batch, device=logits.device)
        return 0.5 * (
            F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :batch].t(), targets)
        )
    weights = positives.to(logits.dtype)
    image_to_text = -(weights / weights.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1)
    back = weights[:, :batch].t()  # (B, B): the real captions against the images
    back_log_probs = logits[:, :batch].t().log_softmax(1)
    text_to_image = -(back / back.sum(1, keepdim=True) * back_log_probs).sum(1)
    return 0.5 * (image_to_text.mean() + text_to_image.mean())


def counterfactual_images(
    train: ScenesDataset,
    index: torch.Tensor,
    texts: list[str],
    negative_of: torch.Tensor,
    fraction: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For a share ``fraction`` of a batch's hard negatives (text ``B + h`` negates caption
    ``negative_of[h]`` of image ``index[negative_of[h]]``), the image edited so that the negative
    is true and the caption false (:func:`~ganfuse.data.scene_edits.counterfactual`): float
    ``(E, 3, S, S)`` and the negatives' rows ``h`` ``(E,)``; None if no edit is found."""
    batch = len(index)
    images, rows = [], []
    for h, row in enumerate(negative_of.tolist()):
        if rng.random() >= fraction:
            continue
        edited = dataset_counterfactual(train, int(index[row]), texts[row], texts[batch + h])
        if edited is not None:
            images.append(edited[0])
            rows.append(h)
    if not images:
        return None
    return uint8_to_float(torch.stack(images)), torch.tensor(rows, dtype=torch.int64)


def binding_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor | float,
    negative_of: torch.Tensor,
) -> torch.Tensor:
    """Two-way cross-entropy of each true caption against its hard negative, on the image's
    logits: ``(B, E)`` images, ``(T, E)`` texts (text ``i < B`` image ``i``'s, text ``B + h`` a
    negative of caption ``negative_of[h]``), ``negative_of`` ``(H,)`` int64 -> scalar (0 when
    ``H = 0``). Unlike the InfoNCE denominator, where the true caption shares its image's target
    with every other true caption of the batch, each pair here carries a full unit of target."""
    if len(negative_of) == 0:
        return image_emb.new_zeros(())
    batch = len(image_emb)
    images = image_emb[negative_of]
    positive = (images * text_emb[negative_of]).sum(-1)
    negative = (images * text_emb[batch : batch + len(negative_of)]).sum(-1)
    logits = scale * torch.stack([positive, negative], dim=1)  # (H, 2)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64))


def prompt_templates() -> list[str]:
    """Prompt templates with ``{color}`` and ``{shape}`` slots: every caption template with each
    size and each position filled in by its canonical words (8 x 2 x 9 = 144)."""
    words = caption_synonyms()
    templates = []
    for template in caption_templates():
        for size in SIZES:
            for position in POSITIONS:
                templates.append(
                    template.format(
                        size=words["size"][size][0],
                        position=words["position"][position][0],
                        color="{color}",
                        shape="{shape}",
                    )
                )
    return templates


def class_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    classes: Sequence[tuple[str, str]],
    templates: Sequence[str],
    batch_size: int = 512,
) -> torch.Tensor:
    """``(C, E)``: per class, the normalised mean of its prompts' normalised text embeddings."""
    prompts = [t.format(color=c, shape=s) for c, s in classes for t in templates]
    chunks = [encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    embeddings = F.normalize(torch.cat(chunks).float(), dim=-1)
    return F.normalize(embeddings.view(len(classes), len(templates), -1).mean(dim=1), dim=-1)


def zero_shot_predict(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Class of highest cosine similarity: ``(B, E)``, ``(C, E)`` -> ``(B,)`` int64."""
    return (F.normalize(image_emb, dim=-1) @ F.normalize(class_emb, dim=-1).t()).argmax(dim=-1)


def recall_at_k(
    similarity: torch.Tensor,
    query_keys: torch.Tensor,
    candidate_keys: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, float]:
    """Share of queries with a candidate of the same key among their top ``k``.

    ``similarity`` ``(Q, N)``; keys ``(Q,)`` and ``(N,)`` int64 (here: the attribute combination).
    """
    top = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices
    hits = candidate_keys[top] == query_keys[:, None]  # (Q, K)
    return {k: float(hits[:, :k].any(dim=1).double().mean()) for k in ks}


def attribute_keys(data: ShapesDataset) -> torch.Tensor:
    """One int64 per image naming its (colour, shape, size, position) combination."""
    labels = data.labels
    return ((labels["color"] * 3 + labels["shape"]) * 2 + labels["size"]) * 9 + labels["position"]


@torch.no_grad()
def embed_images(model: DualEncoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``(N, 3, S, S)`` float in [-1, 1] -> ``(N, E)``."""
    return torch.cat(
        [model.encode_image(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: Sequence[str], batch_size: int = 500) -> torch.Tensor:
    texts = list(texts)
    return torch.cat(
        [model.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )


@torch.no_grad()
def evaluate_zeroshot(
    model: DualEncoder,
    test: ShapesDataset | ScenesDataset,
    heldout: ShapesDataset | ScenesDataset,
    templates: Sequence[str] | None = None,
) -> dict[str, float]:
    """Zero-shot top-1 over the 21 colour-shape classes on seen (``test``) and held-out pairs,
    and attribute-correct retrieval recall@1/5/10 both ways on each split. On ``scenes`` splits:
    retrieval recall and binding-swap matching
    (:func:`~ganfuse.multimodal.scene_zeroshot.evaluate_scenes_split`), prefixes ``seen_`` and
    ``heldout_``."""
    was_training = model.training
    model.eval()
    if isinstance(test, ScenesDataset) or isinstance(heldout, ScenesDataset):
        metrics = {"temperature": model.temperature}
        for name, data in (("seen", test), ("heldout", heldout)):
            metrics.update(
                evaluate_scenes_split(
                    lambda x: embed_images(model, x), lambda t: embed_texts(model, t), data, name
                )
            )
        metrics["modality_probe_accuracy"] = modality_probe(model, test)
        model.train(was_training)
        return metrics
    classes = class_embeddings(
        lambda t: model.encode_text(t), COLOR_SHAPE_CLASSES, templates or prompt_templates()
    )
    metrics: dict[str, float] = {"temperature": model.temperature}
    for name, data in (("seen", test), ("heldout", heldout)):
        image_emb = embed_images(model, data.float_images())
        predicted = zero_shot_predict(image_emb, classes)
        metrics[f"{name}_top1"] = float((predicted == data.labels["color_shape"]).float().mean())
        text_emb = embed_texts(model, data.captions)
        keys = attribute_keys(data)
        similarity = image_emb @ text_emb.t()
        for k, value in recall_at_k(similarity, keys, keys).items():
            metrics[f"{name}_i2t_r{k}"] = value
        for k, value in recall_at_k(similarity.t(), keys, keys).items():
            metrics[f"{name}_t2i_r{k}"] = value
    metrics["modality_probe_accuracy"] = modality_probe(model, test)
    model.train(was_training)
    return metrics


def split_embeddings(
    model: DualEncoder, data: ShapesDataset | ScenesDataset
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A split's image embeddings ``(N, E)``, the embeddings of its dataset captions ``(C, E)``
    (one per ``shapes`` image, every caption of a ``scenes`` image) and each caption's image row
    ``(C,)`` int64."""
    image_emb = embed_images(model, uint8_to_float(data.images))
    if isinstance(data, ScenesDataset | PairsData):
        owners = [i for i, texts in enumerate(data.captions) for _ in texts]
        captions = [c for texts in data.captions for c in texts]
    else:
        owners, captions = list(range(len(data))), list(data.captions)
    return image_emb, embed_texts(model, captions), torch.tensor(owners, dtype=torch.int64)


@torch.no_grad()
def modality_probe(model: DualEncoder, data: ShapesDataset | ScenesDataset) -> float:
    """How well a fresh modality discriminator tells the split's image embeddings from its
    caption embeddings: trained on the even images and their captions, scored (balanced accuracy)
    on the odd ones; 0.5 means the two modalities share one distribution in the common space
    (:func:`~ganfuse.multimodal.alignment.modality_probe_accuracy`)."""
    image_emb, text_emb, owners = split_embeddings(model, data)
    rows = torch.arange(len(image_emb))
    fit_images, fit_texts = image_emb[rows % 2 == 0], text_emb[owners % 2 == 0]
    test_images, test_texts = image_emb[rows % 2 == 1], text_emb[owners % 2 == 1]
    return modality_probe_accuracy(fit_images, fit_texts, test_images, test_texts)


def world_vocabulary(config: FuseConfig) -> list[str]:
    """The small text encoder's words: every caption word of ``shapes`` or ``scenes``; on
    ``folder`` and ``emoji`` the words of the training captions (others are unknown)."""
    if config.world in PAIR_WORLDS:
        return WordTokenizer.from_texts(training_texts(config_split(config, "train"))).words()
    return scenes_vocabulary() if config.world == "scenes" else shapes_vocabulary()


def build_dual_encoder(config: FuseConfig, text_encoder: TextEncoder | None = None) -> DualEncoder:
    """The dual encoder of ``config``; a new small text encoder gets
    :func:`world_vocabulary` (a saved one, ``text_encoder``, keeps its own)."""
    if text_encoder is None:
        vocab = world_vocabulary(config) if config.text_encoder == "small" else None
        text_encoder = build_text(config, vocab)
    text = text_encoder
    return DualEncoder(build_image_encoder(config), text, config.embed_dim, config.init_temperature)


def _shapes_draw(
    config: FuseConfig, model: DualEncoder, frozen_text: bool, paired: torch.Tensor
) -> Draw:
    """Batches of ``shapes`` pairs (rows ``paired`` of ``train``): images, one caption each,
    positives of identical attributes."""
    train = config_split(config, "train")
    if frozen_text:
        model.text_encoder.encode_cached(train.captions)
    keys = attribute_keys(train)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    def draw() -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        index = paired[torch.randperm(len(paired), generator=generator)[: config.batch_size]]
        if frozen_text:  # the cached dataset captions
            texts = [train.captions[i] for i in index.tolist()]
        else:
            texts = [make_caption(train.attributes[i], rng) for i in index.tolist()]
        positives = keys[index][:, None] == keys[index][None, :]
        return (
            uint8_to_float(train.images[index]),
            texts,
            positives,
            torch.zeros(0, dtype=torch.int64),
            index,
        )

    return draw


def _scenes_draw(config: FuseConfig, paired: torch.Tensor) -> Draw:
    """Batches of ``scenes`` pairs (rows ``paired`` of ``train``): images, one fresh caption
    each, then (with ``hard_negatives``) the captions' binding negatives, which never name a
    held-out pair; positives by the exact judge."""
    train = config_split(config, "train")
    arrays = SceneArrays.from_graphs(train.graphs)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    def draw() -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        index = paired[torch.randperm(len(paired), generator=generator)[: config.batch_size]]
        batch = contrastive_batch(
            train,
            arrays,
            index,
            rng,
            config.hard_negatives,
            forbidden_pairs=train.holdout,
            replacement_fraction=config.replacement_negatives,
        )
        negative_of = torch.tensor(batch.negative_of, dtype=torch.int64)
        return uint8_to_float(train.images[index]), batch.texts, batch.positives, negative_of, index

    return draw


@dataclass
class ExtraBatch:
    """What a step adds to the paired batch: ``images`` float ``(U + P, 3, S, S)`` and ``texts``
    (``U + P``), first ``unpaired`` random unpaired ones (images and texts drawn independently),
    then ``P`` pseudo-pairs whose ``pseudo_positives`` ``(P, P)`` bool mark texts that say the
    same."""

    images: torch.Tensor
    texts: list[str]
    unpaired: int
    pseudo_positives: torch.Tensor


class UnpairedLearning:
    """The terms of a zero-shot run beyond the paired InfoNCE (:mod:`ganfuse.multimodal.alignment`):
    the adversarial modality term (``adversarial_weight``), cycle consistency (``cycle_weight``),
    pseudo-pairs (``pseudo_weight``) and self-supervised views of the images (``ssl_weight``).
    The adversarial and cycle terms see every image and every true caption of the step, the view
    term every image: the paired batch and, with ``paired_fraction < 1``, a batch of unpaired
    images and captions; pseudo-pairs exist only with unpaired data."""

    def __init__(
        self,
        config: FuseConfig,
        train: ShapesDataset | ScenesDataset,
        split: PairedSplit,
        image_dim: int,
    ):
        self.config, self.train, self.split = config, train, split
        # SimCLR's projection head: the view term shapes its output, so the common space need
        # not spread images uniformly (which would pull them off their captions).
        self.ssl_head = (
            nn.Sequential(
                nn.Linear(image_dim, image_dim), nn.ReLU(), nn.Linear(image_dim, image_dim)
            )
            if config.ssl_weight > 0
            else None
        )
        self.aligner = (
            AdversarialAligner(
                config.embed_dim,
                config.adversarial_mode,
                config.adversarial_weight,
                config.adversarial_lr,
                config.seed,
                config.adversarial_d_steps,
            )
            if config.adversarial_weight > 0
            else None
        )
        wants_unpaired = (
            config.adversarial_weight
            or config.cycle_weight
            or config.pseudo_weight
            or config.ssl_weight
        )
        self.pool = unpaired_pool(train, split) if split.has_unpaired and wants_unpaired else None
        self.pseudo = (
            PseudoPairs(
                self.pool, config.pseudo_threshold, config.pseudo_neighbours, config.seed
            )
            if self.pool is not None and config.pseudo_weight > 0
            else None
        )
        # Its own stream: the paired batches stay those of a run without these terms.
        seed = int(np.random.SeedSequence([config.seed, 1]).generate_state(1)[0])
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def active(self) -> bool:
        return (
            self.aligner is not None
            or self.config.cycle_weight > 0
            or self.config.ssl_weight > 0
            or self.pseudo is not None
        )

    def parameters(self) -> list[nn.Parameter]:
        """Parameters the encoders' optimiser also updates (the discriminator's under ``grl``,
        the view term's projection head)."""
        out = self.aligner.shared_parameters() if self.aligner is not None else []
        return out + (list(self.ssl_head.parameters()) if self.ssl_head is not None else [])

    def draw(self, step: int, model: DualEncoder) -> ExtraBatch:
        """The unpaired and pseudo-paired part of step ``step``'s batch; mines pseudo-pairs
        again with ``model`` every ``pseudo_every`` steps."""
        empty = ExtraBatch(torch.zeros(0), [], 0, torch.zeros(0, 0, dtype=torch.bool))
        if self.pool is None:
            return empty
        images, texts = self.pool.draw(self.config.batch_size, self.generator)
        positives = empty.pseudo_positives
        if self.pseudo is not None:
            if step and step % self.config.pseudo_every == 0:
                model.eval()
                self.pseudo.mine(lambda x: embed_images(model, x), lambda t: embed_texts(model, t))
                model.train()
            if len(self.pseudo):
                pseudo_images, pseudo_texts, positives = self.pseudo.draw(
                    self.config.batch_size, self.generator
                )
                images = torch.cat([images, pseudo_images])
                texts = texts + pseudo_texts
        return ExtraBatch(images, texts, self.config.batch_size, positives)

    def loss(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        batch: int,
        paired_texts: int,
        extra: ExtraBatch,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """The unpaired terms of one step. ``image_emb`` ``(B + U + P, E)``: the paired batch's
        ``B`` images, then ``extra``'s; ``text_emb``: the paired batch's ``paired_texts`` texts
        (its ``B`` captions, then any hard negatives), then ``extra``'s."""
        loss = image_emb.new_zeros(())
        pseudo = len(extra.pseudo_positives)
        if pseudo:
            loss = loss + self.config.pseudo_weight * info_nce(
                image_emb[batch + extra.unpaired :],
                text_emb[paired_texts + extra.unpaired :],
                scale,
                extra.pseudo_positives,
            )
        # Every image and every true caption of the step (hard negatives are no one's caption).
        captions = torch.cat([text_emb[:batch], text_emb[paired_texts:]])
        if self.aligner is not None:
            loss = loss + self.aligner.encoder_loss(image_emb, captions)
        if self.config.cycle_weight:
            cycle = cycle_loss(image_emb, captions, float(scale.detach()))
            loss = loss + self.config.cycle_weight * cycle
        return loss

    def self_supervised_loss(
        self, model: DualEncoder, images: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """The self-supervised term on every image of the step (``images``, whose image
        encoder features are ``pooled``): each against a shifted copy of itself
        (:func:`view_loss`), both through the projection head."""
        # a small shift keeps what a caption can say (colours, shapes, sizes, counts and the
        # relations between the objects), so the copy is a view of the same image for view_loss
        views = translate(images, self.generator, pixels=self.config.ssl_shift, padding="border")
        view_pooled = model.image_encoder(views).pooled
        head = self.ssl_head
        first = F.normalize(head(pooled), dim=-1)
        second = F.normalize(head(view_pooled), dim=-1)
        scale = 1.0 / self.config.ssl_temperature
        return self.config.ssl_weight * view_loss(first, second, scale)

    @torch.no_grad()
    def summary(self, model: DualEncoder, test: ShapesDataset | ScenesDataset) -> dict[str, float]:
        """The ``alignment`` block of ``metrics.json``: the split's sizes; the run's own modality
        discriminator's balanced accuracy on the ``test`` split's embeddings; the pseudo-pairs
        of the last mining and, as a diagnostic read against the truth after training, their
        precision."""
        out = {
            "paired_fraction": self.config.paired_fraction,
            "paired_images": len(self.split.paired),
            "unpaired_images": len(self.split.unpaired_images),
            "unpaired_text_images": len(self.split.unpaired_texts),
        }
        if self.aligner is not None:
            was_training = model.training
            model.eval()
            image_emb, text_emb, _ = split_embeddings(model, test)
            model.train(was_training)
            out["modality_d_accuracy"] = modality_accuracy(
                self.aligner.discriminator, image_emb, text_emb
            )
            out["discriminator_loss"] = self.aligner.last_loss
        if self.pseudo is not None:
            out["pseudo_minings"] = self.pseudo.mined
            out["pseudo_pairs"] = len(self.pseudo)
            out["pseudo_pair_precision"] = self.pseudo.precision(self._pair_is_true)
        return out

    def _pair_is_true(self, pool_row: int, text: str) -> bool:
        row = int(self.split.unpaired_images[pool_row])
        if isinstance(self.train, ScenesDataset):
            return bool(caption_truth([text], [self.train.graphs[row]])[0, 0])
        return parse_caption(text) == self.train.attributes[row]


def unpaired_pool(train: ShapesDataset | ScenesDataset, split: PairedSplit) -> UnpairedPool:
    """The unpaired data of ``split``: the images of ``unpaired_images`` and every dataset caption
    of ``unpaired_texts`` (one per ``shapes`` image, four per ``scenes`` image), each with its
    parse."""
    rows = split.unpaired_texts.tolist()
    if isinstance(train, ScenesDataset):
        texts = [c for i in rows for c in train.captions[i]]
        parse = parse_scene_caption
    else:
        texts, parse = [train.captions[i] for i in rows], parse_caption
    return UnpairedPool(train.images[split.unpaired_images], texts, text_keys(texts, parse))


@uses_config_threads
def train_zeroshot(
    config: FuseConfig, out: Path | str | None = None, progress: bool = True
) -> RunResult:
    """Train the dual encoder on ``train`` image-caption pairs; score it on ``test`` and
    ``heldout``.

    A trainable text encoder sees a fresh random caption of each image at every step; a frozen
    pretrained one sees each image's dataset caption, encoded once up front (encoding is its cost).
    On ``scenes`` (``world=scenes``, the small text encoder only) the batch also holds the binding
    negatives of its captions when ``hard_negatives`` is on, and ``binding_weight`` adds
    :func:`binding_loss` on them.
    With ``paired_fraction < 1`` only that share of the training images keeps its captions
    (:func:`~ganfuse.multimodal.alignment.paired_split`); the adversarial, cycle and pseudo-pair
    terms (:class:`UnpairedLearning`) learn from the rest. ``metrics.json`` holds the test
    metrics and an ``alignment`` block (:meth:`UnpairedLearning.summary`).
    ``out`` is checked before any work (a run already there, or a read-only folder, is refused).
    """
    scenes = config.world == "scenes"
    if scenes and config.text_encoder != "small":
        raise ConfigError(
            f"zeroshot on world=scenes trains the small text encoder only, not "
            f"text_encoder={config.text_encoder}"
        )
    if out is not None:
        prepare_run_folder(Path(out), "zeroshot")
    torch.manual_seed(config.seed)
    model = build_dual_encoder(config)
    frozen_text = (
        isinstance(model.text_encoder, SentenceEncoder) and not model.text_encoder.trainable
    )
    train = config_split(config, "train")
    split = paired_split(len(train), config.paired_fraction, config.data_seed)
    if scenes:
        draw = _scenes_draw(config, split.paired)
    elif config.world in PAIR_WORLDS:
        if frozen_text:  # each caption is encoded once, up front
            model.text_encoder.encode_cached(training_texts(train))
        draw = pairs_draw(config, train, split.paired)
    else:
        draw = _shapes_draw(config, model, frozen_text, split.paired)
    unpaired = UnpairedLearning(config, train, split, model.image_encoder.dim)
    probe, objects = None, None
    if config.object_weight:  # dense object supervision of the image encoder (training only)
        probe = ObjectProbe(model.image_encoder.token_dim)
        objects = cell_targets(train.graphs, model.image_encoder.grid)
    counterfactual_rng = np.random.default_rng(config.seed + 1)

    def compute_loss(step: int) -> torch.Tensor:
        images, texts, positives, negative_of, index = draw()
        batch, paired_texts = len(images), len(texts)
        extra = unpaired.draw(step, model) if unpaired.active else None
        if extra is not None and len(extra.texts):
            images, texts = torch.cat([images, extra.images]), texts + extra.texts
        image_features = model.image_encoder(images)
        image_emb = model.embed_image_features(image_features)
        text_emb = model.encode_text(texts)
        paired_images, paired_text_emb = image_emb[:batch], text_emb[:paired_texts]
        loss = info_nce(paired_images, paired_text_emb, model.scale(), positives)
        if config.align_weight:
            loss = loss + config.align_weight * alignment_loss(paired_images, paired_text_emb)
        if config.binding_weight and len(negative_of):
            binding = binding_loss(paired_images, paired_text_emb, model.scale(), negative_of)
            loss = loss + config.binding_weight * binding
        if extra is not None:
            loss = loss + unpaired.loss(
                image_emb, text_emb, batch, paired_texts, extra, model.scale()
            )
            if config.ssl_weight:
                loss = loss + unpaired.self_supervised_loss(model, images, image_features.pooled)
        if probe is not None:
            tokens = image_features.tokens[:batch]
            loss = loss + config.object_weight * probe.loss(tokens, objects[index])
        if config.counterfactuals and len(negative_of):
            pairs = counterfactual_images(
                train, index, texts, negative_of, config.counterfactuals, counterfactual_rng
            )
            if pairs is not None:  # each edited image, its negative (now true) against its caption
                edited, rows = pairs
                edited_emb = model.encode_image(edited)
                flipped = binding_loss(
                    edited_emb,
                    torch.cat([text_emb[batch + rows], text_emb[negative_of[rows]]]),
                    model.scale(),
                    torch.arange(len(rows)),
                )
                loss = loss + config.binding_weight * flipped
        return loss

    model.train()
    world = "" if config.world == "shapes" else f"{config.world}/"
    desc = f"zeroshot/{world}{config.text_encoder}"
    parameters = [*model.parameters(), *unpaired.parameters()]
    if probe is not None:
        parameters += list(probe.parameters())
    stats = optimise(parameters, compute_loss, config, desc, progress, out)
    test = config_split(config, "test")
    metrics = evaluate_config(model, config)
    result = RunResult(model, metrics, stats.seconds, stats.steps, count_parameters(model), None)
    if out is not None:
        record = stats.record(result.params, test=metrics, alignment=unpaired.summary(model, test))
        meta = {"text_encoder": model.text_encoder.config()}
        result.run_dir = save_run(
            Path(out), "zeroshot", model, config, meta, record, step=stats.steps
        )
    return result


@torch.no_grad()
def evaluate_pair_world(model: DualEncoder, config: FuseConfig) -> dict[str, float]:
    """Retrieval recall both ways on ``folder``/``emoji``: on up to ``eval_size`` training images
    (``train_``) and on the held-out ones (``heldout_``), plus the modality probe on those."""
    was_training = model.training
    model.eval()
    train, heldout = config_split(config, "train"), config_split(config, "heldout")
    seen = train.subset(train_eval_rows(len(train), config.eval_size, config.data_seed))
    metrics = {"temperature": model.temperature}
    for name, data in (("train", seen), ("heldout", heldout)):
        metrics.update(
            evaluate_pairs(
                lambda x: embed_images(model, x), lambda t: embed_texts(model, t), data, name
            )
        )
    if len(heldout) >= 4:  # the probe fits on the even images, scores the odd
        metrics["modality_probe_accuracy"] = modality_probe(model, heldout)
    model.train(was_training)
    return metrics


def evaluate_config(model: DualEncoder, config: FuseConfig) -> dict[str, float]:
    """The scores a zero-shot run of ``config`` reports (training and ``fuse evaluate`` alike)."""
    if config.world in PAIR_WORLDS:
        return evaluate_pair_world(model, config)
    return evaluate_zeroshot(model, config_split(config, "test"), config_split(config, "heldout"))


def load_dual_encoder(run_dir: Path | str) -> DualEncoder:
    """The trained dual encoder of a ``zeroshot`` run, in eval mode."""
    return dual_encoder_of(read_run(Path(run_dir), kind="zeroshot"))


def dual_encoder_of(record: RunRecord) -> DualEncoder:
    """The trained dual encoder of an already read ``zeroshot`` run's checkpoint, in eval mode."""
    model = build_dual_encoder(record.config, saved_text_encoder(record))
    load_weights(model, record)
    return model.eval()
