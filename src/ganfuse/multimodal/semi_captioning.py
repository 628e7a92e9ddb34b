"""Captioning from partly paired data: what the ``shapes`` captioner learns from images without
captions and captions without images (``task=caption`` with ``paired_fraction < 1``; issue #17).

The split is the zero-shot one (:func:`~ganfuse.multimodal.alignment.paired_split`): a nested,
seed-fixed share of the training images keeps its captions; of the rest, half are images without
captions and the other half's captions are texts without images, so no unpaired caption belongs
to an unpaired image. The paired images train the decoder by teacher forcing as a fully paired
run does; three terms, each off at weight 0, use the rest:

- **language model on unpaired captions** (``lm_weight``): the decoder also learns p(caption)
  with its image input replaced by a learned "no image" context (:class:`NoImageContext`: one
  pooled vector in place of the image encoder's, and one patch token for a decoder that attends).
  The decoder reads the image only through that input (its first hidden state and a vector fed
  with every token), so the term teaches word order, synonyms and templates, never what an image
  shows; the image encoder gets no gradient from it.
- **caption -> image -> caption** (``cycle_weight``, ``cycle_run``): a frozen text-to-image
  generator, trained on the paired share only, draws an image for each unpaired caption; the
  captioner is trained to write that caption back from the generated image. Generated data as
  training data: the images are detached, so the gradient reaches the captioner only.
- **image -> caption -> image** (``pseudo_weight``): self-training with a cycle filter. Every
  ``pseudo_every`` steps the current captioner captions a pool of unpaired images; the generator
  draws an image of each pseudo-caption; a pseudo-pair is kept when the generated image lies
  within cosine ``pseudo_threshold`` of the real one in the features of the shipped ``shapes``
  attribute classifier (:func:`~ganfuse.metrics.attributes.load_shapes_classifier`). Kept pairs
  train like paired ones. That classifier was trained with attribute labels on its own images
  (another seed), so this filter uses supervision the other terms do not: the benchmark says so.

The generator is reached through :class:`ImageSource` (captions, random stream -> images), so a
test can stand in a fixed one; :func:`load_text_to_image` reads a ``ganfuse train shapes-t2i``
run's newest checkpoint (EMA weights) without the run-loading layer above this one.
:func:`export_paired_folder` writes the paired share as a captioned folder for that training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganfuse.config import arch_family, from_dict, validate
from ganfuse.data.base import uint8_to_float
from ganfuse.data.shapes import ShapesDataset, caption_templates, make_caption, parse_caption
from ganfuse.errors import ConfigError, UserError
from ganfuse.metrics.attributes import load_shapes_classifier, shapes_inputs
from ganfuse.models.build import build_t2i, text_spec_from_config
from ganfuse.models.captioner import Captioner, CaptionVocab
from ganfuse.multimodal.alignment import PairedSplit, paired_split
from ganfuse.multimodal.config import FuseConfig
from ganfuse.multimodal.splits import config_split
from ganfuse.text.prompts import PromptEncoder
from ganfuse.train.checkpoint import latest_good_checkpoint

# Images captioned per pseudo-pair mining (captioning, generating and embedding them is its cost).
PSEUDO_POOL = 2000
# Generator batches when mining: large, nothing is trained through them.
MINING_BATCH = 500

# ``ImageSource(captions, generator)`` -> float ``(len(captions), 3, S, S)`` in [-1, 1]: one image
# of each caption, its latents drawn from ``generator``.
ImageSource = Callable[[Sequence[str], torch.Generator], torch.Tensor]


def caption_split(num: int, fraction: float, seed: int) -> PairedSplit:
    """The training rows of a partly paired caption run: the zero-shot rule
    (:func:`~ganfuse.multimodal.alignment.paired_split`), so the paired images of a fraction are
    the same in both tasks and a smaller fraction's are inside a larger one's."""
    return paired_split(num, fraction, seed)


def unpaired_captions(train: ShapesDataset, split: PairedSplit) -> list[str]:
    """The captions used without images: the dataset caption of each ``unpaired_texts`` row."""
    return [train.captions[i] for i in split.unpaired_texts.tolist()]


def export_paired_folder(
    config: FuseConfig, out: Path | str, captions_per_image: int | None = None
) -> int:
    """Write the paired share of ``config``'s training split as a captioned folder (Hugging Face
    imagefolder: ``NNNNN.png`` and ``metadata.jsonl`` with ``file_name`` and ``text``), for
    ``ganfuse train shapes-t2i --set data.name=folder --set data.path=OUT``: a generator trained
    on it has seen no unpaired item. Each image gets ``captions_per_image`` lines (default one per
    caption template, synonyms at the config's seed), as a paired caption run draws fresh captions
    of its paired images. Returns the number of images."""
    if config.world != "shapes":
        raise ConfigError(f"exporting the paired share needs world=shapes, not {config.world}")
    train = config_split(config, "train")
    split = caption_split(len(train), config.paired_fraction, config.data_seed)
    count = len(caption_templates()) if captions_per_image is None else captions_per_image
    rng = np.random.default_rng(config.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as handle:
        for n, row in enumerate(split.paired.tolist()):
            name = f"{n:05d}.png"
            Image.fromarray(train.images[row].permute(1, 2, 0).numpy()).save(out / name)
            templates = len(caption_templates())
            for k in range(count):
                text = make_caption(train.attributes[row], rng, template=k % templates)
                handle.write(json.dumps({"file_name": name, "text": text, "row": row}) + "\n")
    return len(split.paired)


class FrozenTextToImage:
    """A text-to-image run's generator (EMA weights), frozen, as an :class:`ImageSource`.

    Conditions of captions are computed once each (sentence embeddings through the text cache,
    or word ids) and kept; ``prepare`` fills the table for many captions at once."""

    def __init__(self, generator: nn.Module, prompt_encoder: PromptEncoder, z_dim: int, path: Path):
        self.generator = generator.eval().requires_grad_(False)
        self.prompt_encoder, self.z_dim, self.path = prompt_encoder, z_dim, path
        self._rows: dict[str, torch.Tensor] = {}

    def prepare(self, captions: Sequence[str]) -> None:
        new = [c for c in dict.fromkeys(captions) if c not in self._rows]
        if new:
            table = self.prompt_encoder.encode_many(new)
            self._rows.update(zip(new, table, strict=True))

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], generator: torch.Generator) -> torch.Tensor:
        self.prepare(captions)
        cond = torch.stack([self._rows[c] for c in captions])
        z = torch.randn(len(captions), self.z_dim, generator=generator)
        return self.generator(z, cond).float().clamp(-1, 1)


def load_text_to_image(path: Path | str) -> FrozenTextToImage:
    """The generator of the text-to-image run in ``path`` (its newest intact checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"cycle_run {path} is not a run folder; train one with ganfuse train shapes-t2i")
    _, manifest, weights, _ = latest_good_checkpoint(path)
    config = validate(from_dict(manifest["config"]))
    if arch_family(config.model.arch) != "t2i":
        raise UserError(f"cycle_run {path} is not a text-to-image run (model.arch {config.model.arch})")
    spec = text_spec_from_config(config)
    g, _ = build_t2i(config, spec, int(manifest.get("channels", 3)))
    prefix = "G_ema." if any(k.startswith("G_ema.") for k in weights) else "G."
    g.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    return FrozenTextToImage(g, PromptEncoder(spec), config.model.z_dim, path)


class NoImageContext(nn.Module):
    """The decoder's image input when there is no image: a learned pooled vector ``(dim,)`` and,
    for a decoder that attends, one learned patch token ``(1, token_dim)``."""

    def __init__(self, dim: int, token_dim: int | None):
        super().__init__()
        self.pooled = nn.Parameter(torch.zeros(dim))
        self.token = nn.Parameter(torch.zeros(1, token_dim)) if token_dim else None

    def forward(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, dim)`` and ``(B, 1, token_dim)`` (or None)."""
        patches = None if self.token is None else self.token[None].expand(batch, -1, -1)
        return self.pooled[None].expand(batch, -1), patches


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, vocab: CaptionVocab) -> torch.Tensor:
    """Mean next-token cross-entropy: logits ``(B, L, V)``, targets ``(B, L)``, padding ignored."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=vocab.pad)


def language_model_loss(
    model: Captioner, context: NoImageContext, captions: Sequence[str]
) -> torch.Tensor:
    """Teacher-forced loss of ``captions`` with the image replaced by ``context``."""
    inputs, targets = model.vocab.encode(list(captions))
    pooled, patches = context(len(captions))
    return caption_loss(model.decoder(pooled, inputs, patches), targets, model.vocab)


def cycle_caption_loss(
    model: Captioner, source: ImageSource, captions: Sequence[str], generator: torch.Generator
) -> torch.Tensor:
    """caption -> generated image -> the same caption: the captioner's loss on ``source``'s
    images of ``captions`` (detached: the source is not trained)."""
    images = source(list(captions), generator).detach()
    inputs, targets = model.vocab.encode(list(captions))
    return caption_loss(model(images, inputs), targets, model.vocab)


@torch.no_grad()
def cycle_filtered_pseudo_pairs(
    model: Captioner,
    source: ImageSource,
    images: torch.Tensor,
    threshold: float,
    generator: torch.Generator,
    features: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """image -> pseudo-caption -> generated image, kept where the two images' ``features`` have
    cosine >= ``threshold``. ``images`` float ``(N, 3, S, S)``; returns the kept rows ``(K,)``,
    their pseudo-captions and every image's cosine ``(N,)``."""
    was_training = model.training
    model.eval()
    captions = [c for i in range(0, len(images), MINING_BATCH)
                for c in model.caption(images[i : i + MINING_BATCH])]
    model.train(was_training)
    usable = [i for i, c in enumerate(captions) if c]
    cosine = torch.full((len(images),), -1.0)
    for start in range(0, len(usable), MINING_BATCH):
        rows = usable[start : start + MINING_BATCH]
        made = source([captions[i] for i in rows], generator)
        cosine[rows] = F.cosine_similarity(features(made), features(images[rows]), dim=-1)
    kept = (cosine >= threshold).nonzero().flatten()
    return kept, [captions[i] for i in kept.tolist()], cosine


def shapes_features(images: torch.Tensor) -> torch.Tensor:
    """The shipped ``shapes`` classifier's 128-d features of float ``(N, 3, S, S)`` images."""
    classifier = load_shapes_classifier()
    return classifier.features(shapes_inputs(images)).float()


class UnpairedCaptionTerms:
    """The terms of a caption run beyond the paired teacher forcing (see the module): the
    language model (``lm_weight``), caption -> image -> caption (``cycle_weight``) and cycle-filtered
    pseudo-captions (``pseudo_weight``), on the unpaired share of ``split``. ``source`` is the
    frozen text-to-image generator (loaded from ``config.cycle_run`` when not given)."""

    def __init__(
        self,
        config: FuseConfig,
        train: ShapesDataset,
        split: PairedSplit,
        model: Captioner,
        source: ImageSource | None = None,
        features: Callable[[torch.Tensor], torch.Tensor] = shapes_features,
    ):
        self.config, self.train, self.split, self.features = config, train, split, features
        self.captions = unpaired_captions(train, split) if split.has_unpaired else []
        self.images = train.images[split.unpaired_images] if split.has_unpaired else None
        needs_source = config.cycle_weight > 0 or config.pseudo_weight > 0
        if needs_source and source is None:
            if not config.cycle_run:
                raise ConfigError(
                    "cycle_weight and pseudo_weight need cycle_run=PATH, a text-to-image run "
                    "trained on the paired share only"
                )
            source = load_text_to_image(config.cycle_run)
        self.source = source if needs_source and self.captions else None
        if isinstance(self.source, FrozenTextToImage):
            self.source.prepare(self.captions)  # every unpaired caption's condition, once
        token_dim = model.image_encoder.token_dim if model.decoder.attention is not None else None
        self.context = NoImageContext(model.image_encoder.dim, token_dim)
        # Its own stream: the paired batches stay those of a run without these terms.
        seed = int(np.random.SeedSequence([config.seed, 2]).generate_state(1)[0])
        self.generator = torch.Generator().manual_seed(seed)
        self.pseudo_rows = torch.zeros(0, dtype=torch.int64)  # rows of self.images
        self.pseudo_texts: list[str] = []
        self.minings, self.last_kept_share = 0, float("nan")

    @property
    def active(self) -> bool:
        return bool(self.captions) and (
            self.config.lm_weight > 0 or self.source is not None
        )

    def parameters(self) -> list[nn.Parameter]:
        """The "no image" context's, when the language-model term is on."""
        return list(self.context.parameters()) if self.config.lm_weight > 0 else []

    def _draw_captions(self) -> list[str]:
        rows = torch.randint(len(self.captions), (self.config.batch_size,), generator=self.generator)
        return [self.captions[i] for i in rows.tolist()]

    def loss(self, step: int, model: Captioner) -> torch.Tensor:
        """The unpaired terms of step ``step``: a scalar."""
        c = self.config
        loss = torch.zeros(())
        if not self.active:
            return loss
        if c.lm_weight > 0:
            loss = loss + c.lm_weight * language_model_loss(model, self.context, self._draw_captions())
        if c.cycle_weight > 0 and self.source is not None:
            cycle = cycle_caption_loss(model, self.source, self._draw_captions(), self.generator)
            loss = loss + c.cycle_weight * cycle
        if c.pseudo_weight > 0 and self.source is not None:
            if step and step % c.pseudo_every == 0:
                self.mine(model)
            if len(self.pseudo_rows):
                pick = torch.randint(len(self.pseudo_rows), (c.batch_size,), generator=self.generator)
                images = uint8_to_float(self.images[self.pseudo_rows[pick]])
                inputs, targets = model.vocab.encode([self.pseudo_texts[i] for i in pick.tolist()])
                pseudo = caption_loss(model(images, inputs), targets, model.vocab)
                loss = loss + c.pseudo_weight * pseudo
        return loss

    def mine(self, model: Captioner) -> None:
        """Caption up to :data:`PSEUDO_POOL` random unpaired images and keep the cycle-consistent
        pseudo-pairs (:func:`cycle_filtered_pseudo_pairs`)."""
        pool = torch.randperm(len(self.images), generator=self.generator)[:PSEUDO_POOL]
        kept, texts, _ = cycle_filtered_pseudo_pairs(
            model, self.source, uint8_to_float(self.images[pool]),
            self.config.pseudo_threshold, self.generator, self.features,
        )
        self.pseudo_rows, self.pseudo_texts = pool[kept], texts
        self.minings += 1
        self.last_kept_share = len(kept) / max(1, len(pool))

    def pseudo_precision(self) -> float:
        """Share of the current pseudo-captions that parse to their image's true attributes: a
        diagnostic for reports only; training never calls it."""
        if not len(self.pseudo_rows):
            return float("nan")
        rows = self.split.unpaired_images[self.pseudo_rows].tolist()
        hits = [parse_caption(t) == self.train.attributes[r]
                for r, t in zip(rows, self.pseudo_texts, strict=True)]
        return sum(hits) / len(hits)

    def summary(self) -> dict[str, float]:
        """The ``unpaired`` block of ``metrics.json``: the split's sizes and the pseudo-pairs."""
        out: dict[str, float] = {
            "paired_fraction": self.config.paired_fraction,
            "paired_images": len(self.split.paired),
            "unpaired_images": len(self.split.unpaired_images),
            "unpaired_captions": len(self.captions),
        }
        if self.config.pseudo_weight > 0:
            out["pseudo_minings"] = self.minings
            out["pseudo_pairs"] = len(self.pseudo_rows)
            out["pseudo_kept_share"] = self.last_kept_share
            out["pseudo_precision"] = self.pseudo_precision()
        return out
