"""Objectives: what a model family means, apart from the loop that runs it.

An objective owns its family's data and conditioning (none, a class, a caption), builds its
networks, declares its *phases* and computes each phase's loss, reporting any named statistic on
the way. The loop (:mod:`ganfuse.train.loop`) owns everything else: batches, device, precision,
DDP, optimisers, when each phase runs, checkpoints, the NaN guard and progress.

Phases, in the manner of stylegan2-ada-pytorch (Karras et al. 2020):

    Dmain  every step (``n_critic`` times): D's loss on augmented real and detached fake images
    Dreg   every ``interval`` steps: D's regulariser on real images, scaled by the interval
           (lazy regularisation); its own optimiser step
    Gmain  every step: G's loss on D's verdict of fresh fakes

A regularisation phase with interval ``k`` makes D take ``k + 1`` optimiser steps per ``k``
batches; the loop corrects D's Adam learning rate and betas by ``c = k / (k + 1)`` so the
effective schedule matches an unregularised run. That follows from the phases declared here.

Families, keyed by the family name that :data:`ganfuse.config.ARCHS` gives each architecture:
``gan`` (unconditional and class-conditional, :class:`GANObjective`) and ``t2i`` (text-to-image,
:class:`TextToImageObjective`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.config import Config, arch_family
from ganfuse.data import InMemoryImageDataset, build_dataset
from ganfuse.data.captions import CaptionedFolderDataset, folder_options
from ganfuse.data.emoji import EmojiDataset
from ganfuse.data.scenes import CAPTION_KINDS, ScenesDataset, parse_caption, relation_margin
from ganfuse.data.scenes import DEFAULT_HOLDOUT as SCENES_DEFAULT_HOLDOUT
from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapesDataset
from ganfuse.errors import ConfigError
from ganfuse.metrics.scene_negatives import binding_negatives
from ganfuse.metrics.t2i import parse_holdout
from ganfuse.models.build import build_gan, build_t2i, text_spec_from_config
from ganfuse.models.t2i_words import SEPARATION_GAP
from ganfuse.text.encoders import WordTokenizer, scenes_vocabulary, shapes_vocabulary
from ganfuse.text.prompts import PromptEncoder, TextSpec
from ganfuse.train.augment import AdaptiveAugment
from ganfuse.train.losses import (
    LOSS_FUNCTIONS,
    gradient_penalty,
    hinge_g_loss,
    info_nce,
    matching_aware_gradient_penalty,
    matching_aware_hinge_d_loss,
    paired_feature_matching,
    r1_penalty,
)
from ganfuse.train.objects import (
    SLOT_WINDOW,
    SceneObjectTargets,
    asked_half_sides,
    colour_targets,
    layout_d_loss,
    matched_layout,
    mean_where,
    mode_seeking_loss,
    object_d_loss,
    object_g_loss,
    pair_relation_loss,
    placement_loss,
    real_extents,
    relation_loss,
    shape_targets,
    slot_loss,
    swap_places,
    window_extent,
    wrong_labels,
)
from ganfuse.train.prior import check_caption_words, mix_with_prior, source_prior

log = logging.getLogger("ganfuse")

# Extra captions each image is contrasted with: with only the batch's captions as negatives, D
# can tell pairs apart by colour and place alone; among a thousand, many share those and differ
# only in shape or size, so every attribute must count.
CONTRASTIVE_NEGATIVES = 1024
# Rows of the text-to-image sample grids: seen pairs first, then the default held-out pairs.
GRID_PROMPTS: tuple[str, ...] = (
    "a large red circle in the center",
    "a small green square in the top left",
    "a large blue triangle in the bottom right",
    "a small yellow circle in the top right",
    "a large red triangle in the bottom left",
    "a small green circle in the center",
    "a large blue square in the top center",
    "a small white triangle in the middle right",
)
# Rows of the text-to-image sample grids on emoji: well-known names across the Unicode groups
# (all in the training split; held-out emoji are never shown as if they were trained on).
EMOJI_GRID_PROMPTS: tuple[str, ...] = (
    "grinning face",
    "red heart",
    "dog face",
    "sunflower",
    "red apple",
    "rocket",
    "soccer ball",
    "flag: Japan",
)
GRID_ROWS = 8  # prompts a grid shows


def grid_prompts(name: str, captions: list[str]) -> tuple[str, ...]:
    """The prompts of a text-to-image run's sample grids: fixed rows on the built-in worlds; on a
    user's folder, up to :data:`GRID_ROWS` of its distinct training captions, chosen by a hash of
    the caption (so the rows do not depend on file order and stay the same on resume)."""
    fixed = {"shapes": GRID_PROMPTS, "scenes": SCENES_GRID_PROMPTS, "emoji": EMOJI_GRID_PROMPTS}
    if name in fixed:
        return fixed[name]
    distinct = sorted(set(captions), key=lambda t: hashlib.sha256(t.encode()).hexdigest())
    return tuple(distinct[:GRID_ROWS])


@dataclass(frozen=True)
class Phase:
    """One kind of optimiser step: ``name`` (Dmain, Dreg, Gmain), the network it updates
    (``"D"`` or ``"G"``) and every how many steps it runs."""

    name: str
    module: str
    interval: int = 1

    @property
    def regularises(self) -> bool:
        """A lazy regularisation phase (``Dreg``, ``Greg``): its interval sets the Adam correction."""
        return self.name.endswith("reg")


@dataclass
class Batch:
    """This rank's share of one step's data: real images ``(b, C, H, W)`` float in [-1, 1] with
    their conditions, and fakes ``(b, C, H, W)`` float32 (carrying G's graph when G is trained on
    them) with the conditions they were made for. Conditions are None for unconditional models.
    ``index`` holds the real rows' dataset indices; ``fake_centres`` G's object layout, where G has
    one (``t2i-words``)."""

    real: torch.Tensor
    cond: torch.Tensor | None
    fake: torch.Tensor
    fake_cond: torch.Tensor | None
    index: torch.Tensor | None = None  # the real rows' dataset indices
    fake_centres: torch.Tensor | None = None  # (b, K, 2): where G's object slots put the fakes' objects
    # (b, K, W, W) mask logits, (b, K, 3) colours, (b, K, 2) centres of G's slots, with G's graph,
    # and (b, K) the sizes its noise drew for them (text.slot_weight)
    fake_slots: tuple[torch.Tensor, ...] | None = None
    # (b, K, K, 5) logits of G's pair head over what each slot is of another, with G's graph
    # (model.slot_relations)
    fake_relations: torch.Tensor | None = None
    # G's slots placed twice, with the batch's noise and the next image's (text.spread_weight):
    # (centres, moved centres, gates, noise, other noise), with G's graph
    fake_spread: tuple[torch.Tensor, ...] | None = None
    # which slot shows which named object, once per batch: D's layout term and G's slot term share it
    slot_matching: tuple[torch.Tensor, ...] | None = None


@dataclass
class Nets:
    """What the loop lends an objective for one phase: D as trained (DDP-wrapped and/or compiled),
    D as the generator step sees it (no gradient synchronisation), the augmentation pipeline with
    this step's generator, the training noise generator (checkpointed), the precision's autocast
    and the statistics reporter."""

    D_train: nn.Module
    D_frozen: nn.Module
    augment: AdaptiveAugment
    aug_gen: torch.Generator
    noise_gen: torch.Generator
    autocast: Callable[[], AbstractContextManager]
    report: Callable[[str, torch.Tensor], None]

    def aug(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment(images, self.aug_gen)


class Objective:
    """Base of the family objectives; see the module docstring for the roles."""

    dataset: InMemoryImageDataset
    num_classes: int = 0  # class-conditional models only

    def __init__(self, config: Config, device: torch.device, progress: bool = True):
        self.config, self.device = config, device

    # what the loop asks of every family
    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def build_models(self, channels: int) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def loss(self, phase: str, batch: Batch, nets: Nets) -> torch.Tensor:
        raise NotImplementedError

    def real_conditions(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The condition of each real image of a batch from the dataset's labels."""
        raise NotImplementedError

    def fake_conditions(self, n: int, real_cond: torch.Tensor | None, world_size: int,
                        gen: torch.Generator) -> torch.Tensor | None:
        """Conditions for the ``n`` fakes of the *global* batch (the loop takes this rank's slice)."""
        raise NotImplementedError

    def sample_conditions(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor | None:
        """Conditions for ``n`` samples: a fixed, readable set for grids (``gen`` None), random
        training conditions otherwise (BatchNorm recalibration)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """What a run loader needs besides the config (goes into each checkpoint's manifest)."""
        return {"num_classes": self.num_classes}


# ---------------------------------------------------------------------------------------------
# unconditional and class-conditional GANs
# ---------------------------------------------------------------------------------------------


class GANObjective(Objective):
    """``train.loss`` (non-saturating, hinge, WGAN-GP or LSGAN) on images, optionally with class
    labels (projection D, conditional BatchNorm in G); R1 on reals as the lazy Dreg phase."""

    def __init__(self, config: Config, device: torch.device, progress: bool = True):
        super().__init__(config, device, progress)
        self.dataset = build_dataset(config.data, progress=progress)
        if config.model.conditional and self.dataset.num_classes == 0:
            raise ConfigError("model.conditional needs a labelled dataset; this one has no classes")
        self.num_classes = self.dataset.num_classes if config.model.conditional else 0
        self.d_loss_fn, self.g_loss_fn = LOSS_FUNCTIONS[config.train.loss]

    def phases(self) -> list[Phase]:
        t = self.config.train
        reg = [Phase("Dreg", "D", t.r1_every)] if t.r1_gamma > 0 else []
        return [Phase("Dmain", "D"), *reg, Phase("Gmain", "G")]

    def build_models(self, channels: int) -> tuple[nn.Module, nn.Module]:
        return build_gan(self.config, channels, self.num_classes)

    def metadata(self) -> dict:
        names = list(self.dataset.class_names) if self.num_classes else []
        return {"num_classes": self.num_classes, "class_names": names}

    def real_conditions(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels.to(self.device) if self.num_classes else None

    def fake_conditions(self, n, real_cond, world_size, gen):
        if not self.num_classes:
            return None
        if real_cond is not None and n == real_cond.shape[0] * world_size:
            # The real batch's labels (each rank's slice its own), so fakes follow the data's class
            # shares. Uniform labels on unbalanced data (emoji groups hold 9 to 2,148 images) give
            # fakes another label marginal than reals, which D can learn instead of the images.
            return real_cond.repeat(world_size)
        return torch.randint(0, self.num_classes, (n,), device=self.device, generator=gen)

    def sample_conditions(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if gen is None:  # classes 0..K-1 repeated
            return torch.arange(n, device=self.device) % self.num_classes
        return torch.randint(0, self.num_classes, (n,), device=self.device, generator=gen)

    def loss(self, phase: str, batch: Batch, nets: Nets) -> torch.Tensor:
        t = self.config.train
        if phase == "Dmain":
            real_in, fake_in = nets.aug(batch.real).detach(), nets.aug(batch.fake.detach())
            with nets.autocast():
                real_out = nets.D_train(real_in, batch.cond)
                fake_logits = nets.D_train(fake_in, batch.fake_cond).logits.float()
            real_logits = real_out.logits.float()
            loss = self.d_loss_fn(real_logits, fake_logits)
            if real_out.class_logits is not None:  # AC-GAN's classifier learns the real labels only
                aux = F.cross_entropy(real_out.class_logits.float(), batch.cond)
                nets.report("aux_d", aux)
                nets.report("aux_acc_real", (real_out.class_logits.argmax(1) == batch.cond).float().mean())
                loss = loss + t.aux_class_weight * aux
            if t.loss == "wgan-gp":  # interpolates take the real image's label
                gp = gradient_penalty(lambda x: nets.D_train(x, batch.cond).logits, real_in, fake_in,
                                      nets.aug_gen)
                loss = loss + t.gp_weight * gp
                nets.report("gp", gp)
            nets.augment.accumulate(real_logits)
            report_d_verdicts(nets, loss, real_logits, fake_logits)
            return loss
        if phase == "Dreg":
            real_in = nets.aug(batch.real).detach().requires_grad_(True)
            with nets.autocast():
                out = nets.D_train(real_in, batch.cond)
            logits = out.logits.float()
            r1 = r1_penalty(logits, real_in)
            nets.report("r1", r1)
            # ``* 0`` keeps every parameter (the auxiliary classifier's too) in the graph, as DDP requires
            unused = 0.0 * logits.sum()
            if out.class_logits is not None:
                unused = unused + 0.0 * out.class_logits.float().sum()
            return (t.r1_gamma / 2) * r1 * t.r1_every + unused
        if phase == "Gmain":
            with nets.autocast():
                out = nets.D_frozen(nets.aug(batch.fake), batch.fake_cond)
            loss = self.g_loss_fn(out.logits.float())
            nets.report("loss_g", loss)
            if out.class_logits is not None:  # fakes should be classified as the class asked for
                aux = F.cross_entropy(out.class_logits.float(), batch.fake_cond)
                nets.report("aux_g", aux)
                nets.report("aux_acc_fake", (out.class_logits.argmax(1) == batch.fake_cond).float().mean())
                loss = loss + t.aux_class_weight * aux
            return loss
        raise ValueError(f"unknown phase {phase!r}")


def report_d_verdicts(nets: Nets, loss: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> None:
    """The statistics every discriminator update logs, from its logits on reals and fakes."""
    nets.report("loss_d", loss)
    nets.report("d_real", real.mean())
    nets.report("d_fake", fake.mean())
    nets.report("acc_real", (real > 0).float().mean())
    nets.report("acc_fake", (fake < 0).float().mean())


# ---------------------------------------------------------------------------------------------
# text-to-image
# ---------------------------------------------------------------------------------------------


# Rows of the text-to-image sample grids on scenes: two objects with a relation, bindings that
# differ only by a swap, a list, and the count ladder.
SCENES_GRID_PROMPTS: tuple[str, ...] = (
    "a red circle to the left of a blue star",
    "a blue circle to the left of a red star",
    "a large yellow square above a small green diamond",
    "a small green square above a large yellow diamond",
    "a white triangle and an orange circle",
    "a magenta diamond",
    "a cyan square, a red star and a white circle",
    "a yellow star, a blue diamond, an orange triangle and a green square",
)


def scene_t2i_pairs(graphs, captions: list[list[str]]) -> list[tuple[int, str]]:
    """``(image index, caption)`` pairs for text-to-image on ``scenes``: captions that name every
    object of their scene, so that the caption fixes what is in the image (not where): each image's
    list caption, and the relation caption of each two-object scene."""
    pairs = []
    for i, (graph, texts) in enumerate(zip(graphs, captions, strict=True)):
        pairs.append((i, texts[CAPTION_KINDS.index("list")]))
        relation = texts[CAPTION_KINDS.index("relation")]
        if len(graph.objects) == 2 and parse_caption(relation).kind == "relation":
            pairs.append((i, relation))
    return pairs


def binding_swaps(captions: list[str], graphs, holdout, seed: int = 0) -> dict[str, str]:
    """One binding swap per distinct caption (a colour, shape or size swapped between two named
    objects, or a relation reversed: the same words, false for the image), naming no held-out pair;
    captions with none (one object, or twins) are left out. For captions that name every object a
    swap's truth does not depend on which image the caption came from."""
    rng = torch.Generator().manual_seed(seed)
    swaps: dict[str, str] = {}
    for text, graph in zip(captions, graphs, strict=True):
        if text in swaps:
            continue
        options = binding_negatives(text, graph, holdout)
        if options:
            swaps[text] = options[int(torch.randint(len(options), (), generator=rng))].text
    return swaps


class CaptionedData(NamedTuple):
    """Training images uint8 ``(N, 3, S, S)``, one caption each, the dataset name, the held-out
    pairs (shapes and scenes; None elsewhere) and, on scenes, each image's scene graph."""

    images: torch.Tensor
    captions: list[str]
    name: str
    holdout: tuple | None
    graphs: list | None = None


def load_captioned_data(config: Config) -> CaptionedData:
    """The training pairs of a text-to-image run. On scenes an image appears once per caption
    that names all its objects (:func:`scene_t2i_pairs`)."""
    d = config.data
    if d.name == "scenes":
        holdout = parse_holdout(d.holdout)
        data = ScenesDataset("train", image_size=d.image_size,
                             holdout=SCENES_DEFAULT_HOLDOUT if holdout is None else holdout)
        pairs = scene_t2i_pairs(data.graphs, data.captions)
        rows = torch.tensor([i for i, _ in pairs])
        return CaptionedData(data.images[rows], [t for _, t in pairs], "scenes", tuple(data.holdout),
                             [data.graphs[i] for i, _ in pairs])
    if d.name == "shapes":
        holdout = parse_holdout(d.holdout)
        holdout = DEFAULT_HOLDOUT if holdout is None else holdout
        data = ShapesDataset("train", image_size=d.image_size, holdout=holdout)
        return CaptionedData(data.images, list(data.captions), "shapes", tuple(data.holdout))
    if d.name == "emoji":  # the emoji of the held-out bases are never trained on
        data = EmojiDataset("train", image_size=d.image_size)
        return CaptionedData(data.images, list(data.captions), "emoji", None)
    data = CaptionedFolderDataset(d.path, d.image_size, **folder_options(d))
    return CaptionedData(data.images, list(data.captions), data.name, None)


class SwapTable:
    """Condition rows of captions -> the condition rows of their binding swaps, by an exact
    integer key of each row (word ids are integers; a random linear hash, then a sorted search)."""

    def __init__(self, rows: torch.Tensor, swaps: torch.Tensor):
        if rows.is_floating_point():
            raise ConfigError("binding swaps need word ids (text.encoder=small) to be looked up")
        gen = torch.Generator().manual_seed(0)
        self.weights = torch.randint(1, 2**31 - 1, (rows.shape[1],), generator=gen).to(rows.device)
        keys, self.order = self.key(rows).sort()
        self.keys, self.rows, self.swaps = keys, rows, swaps

    def key(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows * self.weights).sum(1)

    def lookup(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(swap rows (B, T), found (B,) bool)``; a row without a swap gets its own row back."""
        key = self.key(cond)
        at = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
        row = self.order[at]
        found = (self.keys[at] == key) & (self.rows[row] == cond).all(1)
        return torch.where(found[:, None], self.swaps[row], cond), found


class TextToImageObjective(Objective):
    """Captions as conditions, with the matching-aware hinge objective (DF-GAN and successors).

    Conditions are the rows of a table made once from the training captions (frozen sentence
    embeddings through the text cache, or word ids of the small encoder); a real image's condition
    is its caption's row, and the fakes of a step take the real batch's captions (as in DF-GAN), so
    fake ``i`` and real ``i`` share a caption and held-out pairs never reach training.

        Dmain  relu(1 - D(x, t)) + [relu(1 + D(G(z, t), t)) + w relu(1 + D(x, t_other))] / (1 + w)
               (w = ``text.mismatch_weight``: a real image with another caption is judged fake)
               + ``text.contrastive_weight`` * InfoNCE of real (image, text) pairs in D's space
        Dreg   every ``train.r1_every`` steps: MA-GP, ``text.magp_weight`` * E ||(grad_x, grad_c)
               D(x, t)||^p on real pairs (p = ``text.magp_power``), scaled by the interval
        Gmain  -D(G(z, t), t) + ``text.contrastive_weight`` * InfoNCE of fakes against their texts
               + ``text.feature_matching_weight`` * L1 between D's block features of G(z, t) and of
               the real image of caption t + ``text.pixel_weight`` * L1 to that real image
    """

    def __init__(self, config: Config, device: torch.device, progress: bool = True):
        super().__init__(config, device, progress)
        c = config  # the run's own copy: the text section's learned facts are recorded in it
        if c.train.loss != "hinge":
            raise ConfigError(f"text-to-image training uses the hinge loss (train.loss=hinge), got {c.train.loss!r}")
        images, self.captions, name, self.holdout, graphs = load_captioned_data(c)
        if c.text.encoder == "small" and not c.text.vocab:
            world = {"shapes": shapes_vocabulary, "scenes": scenes_vocabulary}.get(name, list)
            c.text.vocab = sorted(set(WordTokenizer.from_texts(self.captions).words()) | set(world()))
        new_captions = list(dict.fromkeys(self.captions))
        if c.train.init_from and c.text.encoder == "small":  # a fine-tune reads with the source's words
            check_caption_words(new_captions, c.text.vocab, c.train.init_from)
        prior_captions: list[str] = []
        if c.train.prior_fraction > 0:  # prior preservation: the frozen source G's images of its prompts
            prior_images, prior_captions = source_prior(
                c.train.init_from, lambda source: load_captioned_data(source).captions, c.train.prior_images,
                c.train.seed, device, c.data.image_size)
            images, self.captions = mix_with_prior(images, self.captions, prior_images, prior_captions,
                                                   c.train.prior_fraction)
            graphs = None  # binding swaps are looked up from a scenes dataset's own graphs
        self.prompt_encoder = PromptEncoder(TextSpec(c.text.encoder, 0, list(c.text.vocab), c.text.max_words))
        self.conditions = self.prompt_encoder.encode_many(self.captions).to(device)
        if self.prompt_encoder.spec.kind == "embedding":
            c.text.embed_dim = int(self.conditions.shape[1])
        self.text_spec: TextSpec = text_spec_from_config(c)
        self.prompt_encoder.spec = self.text_spec
        self.dataset = InMemoryImageDataset(images, torch.arange(images.shape[0]), None, name)
        self.grid_prompts = grid_prompts(name, new_captions)
        if prior_captions:  # a personalisation's grids: its new captions, then the source's prompts
            self.grid_prompts = tuple(dict.fromkeys([*self.grid_prompts[:4], *prior_captions]))[:GRID_ROWS]
        self.grid_table = self.prompt_encoder.encode_many(list(self.grid_prompts)).to(device)
        self.swaps = self._swap_table(graphs, c) if graphs is not None and c.text.swap_fraction > 0 else None
        self.objects: SceneObjectTargets | None = None
        for key in ("object_weight", "slot_weight"):
            if getattr(c.text, key) > 0 and graphs is None:
                raise ConfigError(f"text.{key} reads the scene graphs of the training images; "
                                  "a run with train.prior_fraction has images without them: set it to 0")
        if c.text.object_weight > 0 or c.text.slot_weight > 0:
            self.objects = SceneObjectTargets(graphs, self.captions, c.data.image_size, device)
        if c.text.slot_weight > 0:
            self.slot_shapes = shape_targets(SLOT_WINDOW, c.data.image_size).to(device)
            self.slot_palette = colour_targets().to(device)
            # the relation term's margin in canvas units: the dataset's own (twice the judge's)
            self.relation_margin = relation_margin(c.data.image_size) / c.data.image_size
        log.info("text-to-image data: %d captioned images from %s, text encoder %s", len(self.captions),
                 name, c.text.encoder)

    def _swap_table(self, graphs: list, c: Config) -> SwapTable | None:
        """Binding swaps of the training captions (scenes), looked up from a condition row."""
        swaps = binding_swaps(self.captions, graphs, self.holdout, c.train.seed)
        if not swaps:
            return None
        table = SwapTable(self.encode(list(swaps)), self.encode(list(swaps.values())))
        log.info("binding swaps: %d of %d distinct training captions have one", len(swaps),
                 len(set(self.captions)))
        return table

    def mismatched(self, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """Wrong captions for the real images of a batch: another image's (rolled by one, so no
        image keeps its own), or, for a share ``text.swap_fraction`` of rows whose caption has one,
        its binding swap (the same words, false for the image)."""
        x = self.config.text
        if x.mismatch_weight <= 0 or cond.shape[0] < 2:
            return None
        wrong = cond.roll(1, 0)
        if self.swaps is not None:
            swap, found = self.swaps.lookup(cond)
            take = found & (torch.rand(cond.shape[0], generator=gen, device=gen.device) < x.swap_fraction).to(cond.device)
            wrong = torch.where(take.view(-1, *([1] * (cond.ndim - 1))), swap, wrong)
        return wrong

    def _fake_objects(self, batch: Batch, detach: bool) -> dict:
        """D's ``objects=`` argument for the fakes: G's windows at its slots' centres against the
        objects their captions name; empty where there is no object term, or G has no layout, or
        the fakes were not made for the real rows' own captions."""
        if (self.config.text.object_weight <= 0 or batch.fake_centres is None or batch.index is None
                or batch.fake.shape[0] != batch.index.shape[0]):
            return {}
        images = batch.fake.detach() if detach else batch.fake
        stated = self.objects.stated[batch.index.to(self.device)]
        return {"objects": (images, batch.fake_centres, stated)}

    def _slots(self, batch: Batch, detach: bool):
        """Slot supervision of the fakes (``text.slot_weight``): ``(loss, what to report, G's layout
        as :func:`matched_layout` gives it, or None without text.layout_weight)``, or None where G
        kept no slots or the fakes were not made for the real rows' own captions. The slots are
        matched to the named objects once per batch (``batch.slot_matching``)."""
        if (self.config.text.slot_weight <= 0 or batch.fake_slots is None or batch.index is None
                or batch.fake.shape[0] != batch.index.shape[0]):
            return None
        windows, colours, centres = (v.detach() if detach else v for v in batch.fake_slots[:3])
        stated = self.objects.stated[batch.index.to(self.device)]
        open_sizes = batch.fake_slots[3] if self.config.text.open_size_noise else None
        loss, seen, batch.slot_matching = slot_loss(windows, colours, stated, self.slot_shapes, self.slot_palette,
                                                    open_sizes, batch.slot_matching)
        if self.config.text.layout_weight <= 0:
            return loss, seen, None
        return loss, seen, matched_layout(centres.float(), window_extent(windows), stated, batch.slot_matching)

    def phases(self) -> list[Phase]:
        t, x = self.config.train, self.config.text
        reg = [Phase("Dreg", "D", t.r1_every)] if x.magp_weight > 0 else []
        return [Phase("Dmain", "D"), *reg, Phase("Gmain", "G")]

    def build_models(self, channels: int) -> tuple[nn.Module, nn.Module]:
        g, d = build_t2i(self.config, self.text_spec, channels)
        if self.config.text.slot_weight > 0:  # G keeps its slots' windows for the supervision
            g.slot_window = SLOT_WINDOW
        if self.config.text.spread_weight > 0:  # G places its slots a second time (mode seeking)
            g.spread = True
        if self.text_spec.kind == "embedding":
            for net in (g, d):
                net.text.set_statistics(self.conditions.cpu())
        return g, d

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Conditions of prompts on the training device (through the text cache)."""
        return self.prompt_encoder.encode_many(prompts).to(self.device)

    def real_conditions(self, labels: torch.Tensor) -> torch.Tensor:
        return self.conditions[labels.to(self.device)]  # the labels are dataset indices

    def _random_conditions(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The conditions of ``n`` training captions drawn at random."""
        return self.conditions[torch.randint(0, len(self.captions), (n,), device=self.device, generator=gen)]

    def fake_conditions(self, n, real_cond, world_size, gen):
        if real_cond is None or n != real_cond.shape[0] * world_size:
            return self._random_conditions(n, gen)
        # every rank's slice of the global batch is its own real batch's conditions
        return real_cond.repeat(world_size, *([1] * (real_cond.ndim - 1)))

    def sample_conditions(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        if gen is None:  # rows of 8 samples per grid prompt
            return self.grid_table[(torch.arange(n, device=self.device) // 8) % len(self.grid_prompts)]
        return self._random_conditions(n, gen)

    def loss(self, phase: str, batch: Batch, nets: Nets) -> torch.Tensor:
        x = self.config.text
        contrastive = x.contrastive_weight > 0
        if phase == "Dmain":
            real_in, fake_in = nets.aug(batch.real).detach(), nets.aug(batch.fake.detach())
            wrong = self.mismatched(batch.cond, nets.noise_gen)
            negatives = self._random_conditions(CONTRASTIVE_NEGATIVES, nets.noise_gen) if contrastive else None
            objects = None
            if x.object_weight > 0:  # the object head reads the real objects at their centres
                index = batch.index.to(self.device)
                labels = self.objects.real[index]
                descriptions = torch.cat([labels, wrong_labels(labels, nets.noise_gen)], dim=1)
                objects = (batch.real, self.objects.centres[index], descriptions)
            fake_objects = self._fake_objects(batch, detach=True)
            differs = None if wrong is None else (wrong != batch.cond).flatten(1).any(1)
            layouts = {}
            slots = self._slots(batch, detach=True) if x.layout_weight > 0 else None
            if slots is not None:  # real layouts with their captions (real), G's and misfits (fake)
                index = batch.index.to(self.device)
                named = self.objects.named_real[index]
                real_layout = (self.objects.stated[index][..., :2],
                               torch.cat([self.objects.named_centres[index],
                                          real_extents(named, self.slot_shapes)[..., None]], dim=-1))
                fake_layout = slots[2]
                # misfits: real layouts with a wrong caption, and, for relation captions, with the
                # two related objects' places exchanged
                relation = self.objects.relation[index]
                swapped = (real_layout[0], swap_places(real_layout[1], relation))
                parts = [(batch.cond, *real_layout), (batch.fake_cond, *fake_layout), (batch.cond, *swapped)]
                misfit = [relation]
                if wrong is not None:
                    parts.append((wrong, *real_layout))
                    misfit.append(differs)
                layouts = {"layouts": tuple(torch.cat(p) for p in zip(*parts, strict=True))}
            with nets.autocast():
                out = nets.D_train(real_in, batch.cond, mismatch=wrong, embed=contrastive, negatives=negatives,
                                   **({"objects": objects} if objects is not None else {}), **layouts)
                fake_out = nets.D_train(fake_in, batch.fake_cond, **fake_objects)
                fake_logits = fake_out.logits.float()
            real_logits = out.logits.float()
            mismatch = out.mismatch.float() if out.mismatch is not None else None
            if mismatch is not None:
                # a "wrong" caption that is the image's own (captions repeat, as a personalisation's
                # "my logo" does) is no mismatch: its term is zeroed, relu(1 + m) = 0 at m = -1
                differs = differs.float()
                mismatch = torch.where(differs > 0, mismatch, torch.full_like(mismatch, -1.0))
            loss = matching_aware_hinge_d_loss(real_logits, fake_logits, mismatch, x.mismatch_weight)
            if contrastive:
                con = info_nce(out.image_embedding.float(), out.text_embedding.float(),
                               negatives=out.negative_embedding.float())
                loss = loss + x.contrastive_weight * con
                nets.report("con_d", con)
            if mismatch is not None:  # over the true mismatches
                n = differs.sum().clamp(min=1)
                nets.report("d_mismatch", (mismatch * differs).sum() / n)
                nets.report("acc_mismatch", ((mismatch < 0).float() * differs).sum() / n)
            if layouts:
                n, logits = batch.real.shape[0], out.layout_logits.float()
                lay = layout_d_loss(logits, n, torch.cat(misfit))
                loss = loss + x.layout_weight * lay
                nets.report("layout_d", lay)
                nets.report("layout_real", logits[:n].mean())
                nets.report("layout_fake", logits[n:2 * n].mean())
                nets.report("layout_swapped", mean_where(logits[2 * n:3 * n], relation))
                if len(misfit) > 1:
                    nets.report("layout_wrong", mean_where(logits[3 * n:], misfit[1]))
            if objects is not None and fake_objects:
                obj, seen = object_d_loss(out.object_logits.float(), labels, fake_out.object_logits.float(),
                                          fake_objects["objects"][2])
                loss = loss + x.object_weight * obj
                nets.report("obj_d", obj)
                for key, value in seen.items():
                    nets.report(key, value)
            nets.augment.accumulate(real_logits)
            report_d_verdicts(nets, loss, real_logits, fake_logits)
            return loss
        if phase == "Dreg":
            real_in = nets.aug(batch.real).detach().requires_grad_(True)
            with nets.autocast():
                out = nets.D_train(real_in, batch.cond, embed=contrastive)
            logits = out.logits.float()
            magp = matching_aware_gradient_penalty(logits, real_in, out.text, x.magp_power)
            nets.report("magp", magp)
            unused = sum(e.sum() for e in (out.image_embedding, out.text_embedding) if e is not None)
            # the zero terms keep every parameter in the graph, as DDP requires
            return x.magp_weight * magp * self.config.train.r1_every + 0.0 * (logits.sum() + unused)
        if phase == "Gmain":
            matching = x.feature_matching_weight > 0
            negatives = self._random_conditions(CONTRASTIVE_NEGATIVES, nets.noise_gen) if contrastive else None
            objects = self._fake_objects(batch, detach=False)
            slots = self._slots(batch, detach=False)
            layouts = {"layouts": (batch.fake_cond, *slots[2])} if slots is not None and x.layout_weight > 0 else {}
            with nets.autocast():
                out = nets.D_frozen(nets.aug(batch.fake), batch.fake_cond, embed=contrastive, features=matching,
                                    negatives=negatives, **objects, **layouts)
                if matching:
                    with torch.no_grad():
                        real_maps = nets.D_frozen(batch.real, batch.fake_cond, features=True).features
            loss = hinge_g_loss(out.logits.float())
            nets.report("loss_g", loss)
            if contrastive:
                con = info_nce(out.image_embedding.float(), out.text_embedding.float(), symmetric=False,
                               negatives=out.negative_embedding.float())
                loss = loss + x.contrastive_weight * con
                nets.report("con_g", con)
            if matching:
                fm = paired_feature_matching(out.features, real_maps)
                loss = loss + x.feature_matching_weight * fm
                nets.report("fm", fm)
            if objects:
                obj = object_g_loss(out.object_logits.float(), objects["objects"][2])
                loss = loss + x.object_weight * obj
                nets.report("obj_g", obj)
            if slots is not None:
                loss = loss + x.slot_weight * slots[0]
                nets.report("slot", slots[0])
                for key, value in slots[1].items():
                    nets.report(key, value)
                index = batch.index.to(self.device)
                if x.relation_weight > 0:  # the same matching: the slots that show the related objects
                    rel, held = relation_loss(batch.fake_slots[2].float(), batch.slot_matching,
                                              self.objects.relation_axis[index], self.objects.relation_sign[index],
                                              self.relation_margin)
                    loss = loss + x.relation_weight * rel
                    nets.report("relation_g", rel)
                    nets.report("relation_held", held)
                    if batch.fake_relations is not None:  # model.slot_relations: G's pair head
                        pair, read = pair_relation_loss(batch.fake_relations, batch.slot_matching, self.objects.relation_axis[index],
                                                        self.objects.relation_sign[index])
                        loss = loss + x.relation_weight * pair
                        nets.report("relation_pairs", pair)
                        nets.report("relation_read", read)
                if x.placement_weight > 0:  # the matched slots inside the canvas and apart
                    open_sizes = batch.fake_slots[3] if x.open_size_noise else None
                    centres = batch.fake_slots[2].float()
                    halves = asked_half_sides(self.objects.stated[index], batch.slot_matching, open_sizes,
                                              centres.shape[1], self.config.data.image_size)
                    place, held = placement_loss(centres, batch.slot_matching, halves, SEPARATION_GAP)
                    loss = loss + x.placement_weight * place
                    nets.report("placement_g", place)
                    nets.report("placement_held", held)
            if x.spread_weight > 0 and batch.fake_spread is not None:
                spread, ratio = mode_seeking_loss(*batch.fake_spread)
                loss = loss + x.spread_weight * spread
                nets.report("spread_g", ratio)
            if layouts:
                lay = -out.layout_logits.float().mean()
                loss = loss + x.layout_weight * lay
                nets.report("layout_g", lay)
            if x.pixel_weight > 0:
                pixel = (batch.fake.float() - batch.real.float()).abs().mean()
                loss = loss + x.pixel_weight * pixel
                nets.report("pixel", pixel)
            return loss
        raise ValueError(f"unknown phase {phase!r}")


OBJECTIVES: dict[str, type[Objective]] = {"gan": GANObjective, "t2i": TextToImageObjective}


def make_objective(config: Config, device: torch.device, progress: bool = True) -> Objective:
    """The objective of ``config``'s architecture family (data loaded, conditions ready)."""
    return OBJECTIVES[arch_family(config.model.arch)](config, device, progress)
