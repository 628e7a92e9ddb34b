"""Training a text-to-image GAN: the :class:`~ganfuse.train.loop.Trainer` with captions as
conditions and the matching-aware objective.

Conditions are the rows of a table made once from the training captions (frozen sentence
embeddings, cached on disk, or word ids of the small encoder); a real image's condition is its
caption's row, a fake's a random training caption's row, so held-out pairs never reach training.

One discriminator update (hinge, as in DF-GAN):

    Dmain  relu(1 - D(x, t)) + [relu(1 + D(G(z, t'), t')) + w * relu(1 + D(x, t_other))] / (1 + w)
           the last term, with another caption of the batch, is the matching-aware term (w =
           ``text.mismatch_weight``): a real image with the wrong text is judged fake
    Dcon   + ``text.contrastive_weight`` * InfoNCE of real (image, text) pairs in D's features
    Dreg   every ``train.r1_every`` steps: MA-GP, k * E ||(grad_x, grad_c) D(x, t)||^p on real
           pairs (k = ``text.magp_weight``, p = ``text.magp_power``), scaled by the interval
    Gmain  -D(G(z, t), t) + ``text.contrastive_weight`` * InfoNCE of fakes against their texts
           + ``text.feature_matching_weight`` * L1 between D's block features of G(z, t) and of
           the real image of caption t (fake i takes the caption of real i)
           + ``text.pixel_weight`` * L1 between G(z, t) and that real image itself (pix2pix's
           reconstruction term; for data whose captions pin the image down, as ``shapes``')
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ganfuse.config import Config
from ganfuse.data import InMemoryImageDataset
from ganfuse.errors import ConfigError
from ganfuse.metrics.t2i import parse_holdout
from ganfuse.models.t2i import PromptEncoder, TextSpec, build_t2i, text_spec_from_config
from ganfuse.train.loop import Trainer

log = logging.getLogger("ganfuse")

CONTRASTIVE_TEMPERATURE = 0.1
CONTRASTIVE_NEGATIVES = 1024  # extra captions each image is contrasted with
# Rows of the sample grids: seen pairs first, then the default held-out pairs.
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
EXTRA_STATS = ("d_mismatch", "acc_mismatch", "magp", "con_d", "con_g", "fm", "pixel")


def is_t2i(config: Config) -> bool:
    return config.model.arch.startswith("t2i-")


def matching_aware_hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, mismatch: torch.Tensor | None,
                                mismatch_weight: float = 1.0) -> torch.Tensor:
    """``relu(1 - real) + [relu(1 + fake) + w * relu(1 + mismatch)] / (1 + w)``, each term a batch
    mean of logits ``(B,)``; without ``mismatch`` it is the plain hinge loss."""
    loss_real = F.relu(1.0 - real).mean()
    loss_fake = F.relu(1.0 + fake).mean()
    if mismatch is None or mismatch_weight == 0:
        return loss_real + loss_fake
    return loss_real + (loss_fake + mismatch_weight * F.relu(1.0 + mismatch).mean()) / (1.0 + mismatch_weight)


def info_nce(image: torch.Tensor, text: torch.Tensor, symmetric: bool = True,
             temperature: float = CONTRASTIVE_TEMPERATURE, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss of unit vectors ``image, text (B, K)`` where row i of each is a pair:
    cross-entropy of picking text i for image i among the batch's texts and the extra
    ``negatives`` ``(N, K)`` (and image i for text i, within the batch, when ``symmetric``)."""
    logits = image @ text.t() / temperature
    target = torch.arange(image.shape[0], device=image.device)
    candidates = logits if negatives is None else torch.cat([logits, image @ negatives.t() / temperature], 1)
    loss = F.cross_entropy(candidates, target)
    return (loss + F.cross_entropy(logits.t(), target)) / 2 if symmetric else loss


def matching_aware_gradient_penalty(logits: torch.Tensor, images: torch.Tensor, text: torch.Tensor,
                                    power: float) -> torch.Tensor:
    """MA-GP (Tao et al. 2022): ``E ||(grad_x, grad_c) logits||^p`` over real matching pairs.

    ``images`` ``(B, C, H, W)`` must require grad; ``text`` ``(B, cond_dim)`` is D's text vector
    (part of the graph of ``logits``)."""
    grad_x, grad_c = torch.autograd.grad(logits.sum(), (images, text), create_graph=True)
    norm = (grad_x.flatten(1).pow(2).sum(1) + grad_c.pow(2).sum(1) + 1e-12).sqrt()
    return norm.pow(power).mean()


def paired_feature_matching(fake_maps: list[torch.Tensor], real_maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's blocks of the mean absolute difference between the feature maps of fake ``i``
    and real ``i`` (same caption), as in pix2pixHD's discriminator feature-matching loss."""
    terms = [(f.float() - r.float().detach()).abs().mean() for f, r in zip(fake_maps, real_maps, strict=True)]
    return torch.stack(terms).mean()


def load_captioned_data(config: Config) -> tuple[torch.Tensor, list[str], str, tuple | None]:
    """Training images uint8 ``(N, 3, S, S)``, one caption each, the dataset name, and the held-out
    pairs (shapes only; None elsewhere)."""
    d = config.data
    if d.name == "shapes":
        from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapesDataset

        holdout = parse_holdout(d.holdout)
        holdout = DEFAULT_HOLDOUT if holdout is None else holdout
        data = ShapesDataset("train", image_size=d.image_size, holdout=holdout)
        return data.images, list(data.captions), "shapes", tuple(data.holdout)
    from ganfuse.data.captions import CaptionedFolderDataset

    data = CaptionedFolderDataset(d.path, d.image_size)
    return data.images, list(data.captions), data.name, None


class TextToImageTrainer(Trainer):
    """The GAN loop with captions as conditions; see the module docstring for the objective."""

    def build_data(self) -> InMemoryImageDataset:
        c = self.config
        if c.train.loss != "hinge":
            raise ConfigError(f"text-to-image training uses the hinge loss (train.loss=hinge), got {c.train.loss!r}")
        images, self.captions, name, self.holdout = load_captioned_data(c)
        if c.text.encoder == "small" and not c.text.vocab:
            from ganfuse.text.encoders import WordTokenizer, shapes_vocabulary

            words = WordTokenizer.from_texts(self.captions).words()
            c.text.vocab = sorted(set(words) | (set(shapes_vocabulary()) if name == "shapes" else set()))
        self.prompt_encoder = PromptEncoder(TextSpec(c.text.encoder, 0, list(c.text.vocab), c.text.max_words))
        self.conditions = self.prompt_encoder.encode_many(self.captions).to(self.device)
        if self.prompt_encoder.spec.kind == "embedding":
            c.text.embed_dim = int(self.conditions.shape[1])
        self.text_spec: TextSpec = text_spec_from_config(c)
        self.prompt_encoder.spec = self.text_spec
        self.num_classes = 0
        self._real_conditions: torch.Tensor | None = None  # the last real batch's, for its fakes
        self._real_images: torch.Tensor | None = None
        self._extra = torch.zeros(len(EXTRA_STATS), device=self.device)
        self._extra_counts = torch.zeros(len(EXTRA_STATS), device=self.device)
        log.info("text-to-image data: %d captioned images from %s, text encoder %s", len(self.captions),
                 name, c.text.encoder)
        return InMemoryImageDataset(images, torch.arange(images.shape[0]), None, name)

    def build_models(self):
        g, d = build_t2i(self.config, self.text_spec, self.dataset.channels)
        if self.text_spec.kind == "embedding":
            for net in (g, d):
                net.text.set_statistics(self.conditions.cpu())
        return g, d

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Conditions of prompts on the training device (through the caption cache)."""
        return self.prompt_encoder.encode_many(prompts).to(self.device)

    def fixed_conditions(self, n: int) -> torch.Tensor:
        """Grid rows of 8 samples per prompt of :data:`GRID_PROMPTS`."""
        table = self.encode(list(GRID_PROMPTS))
        return table[(torch.arange(n, device=self.device) // 8) % len(GRID_PROMPTS)]

    def _fake_labels(self, n: int) -> torch.Tensor:
        """The fakes of a step take the captions of the real batch just drawn (as in DF-GAN), so
        fake ``i`` and real ``i`` share a caption: paired terms need it, and the fakes' captions
        follow the training captions' distribution. ``n`` counts the global batch; every rank's
        slice of the result is its own real batch's conditions."""
        real = self._real_conditions
        if real is None or n != real.shape[0] * self.dist.world_size:
            index = torch.randint(0, len(self.captions), (n,), device=self.device, generator=self.noise_gen)
            return self.conditions[index]
        return real.repeat(self.dist.world_size, *([1] * (real.ndim - 1)))

    def batch_conditions(self, indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._real_conditions = self.conditions[labels.to(self.device)]  # the labels are dataset indices
        return self._real_conditions

    def _negative_conditions(self) -> torch.Tensor:
        """:data:`CONTRASTIVE_NEGATIVES` random training captions' conditions: with only the batch's
        captions as negatives, D can tell pairs apart by colour and place alone; among a thousand,
        many share those and differ only in shape or size, so every attribute must count."""
        index = torch.randint(0, len(self.captions), (CONTRASTIVE_NEGATIVES,), device=self.device,
                              generator=self.noise_gen)
        return self.conditions[index]

    def _record_extra(self, name: str, value: torch.Tensor) -> None:
        i = EXTRA_STATS.index(name)
        self._extra[i] += value.detach().float()
        self._extra_counts[i] += 1

    def flush_extra_stats(self) -> dict[str, float]:
        values = (self._extra / self._extra_counts.clamp(min=1)).tolist()
        counts = self._extra_counts.tolist()
        self._extra.zero_()
        self._extra_counts.zero_()
        return {k: round(v, 5) for k, v, n in zip(EXTRA_STATS, values, counts, strict=True) if n > 0}

    def d_step(self, real: torch.Tensor, cond: torch.Tensor, fake: torch.Tensor, fake_cond: torch.Tensor,
               regularise: bool) -> None:
        t, x = self.config.train, self.config.text
        self._real_images = real  # the pair of the fakes the generator step uses
        magp_active = regularise and x.magp_weight > 0
        contrastive = x.contrastive_weight > 0
        real_in = self.augment(real, self.aug_gen).detach().requires_grad_(magp_active)
        fake_in = self.augment(fake.detach(), self.aug_gen)
        # another caption of the batch: rolled by one, so no image keeps its own
        wrong = cond.roll(1, 0) if x.mismatch_weight > 0 and cond.shape[0] > 1 else None
        with self.precision.autocast():
            out = self.D_train(real_in, cond, mismatch=wrong, embed=contrastive, full=True,
                               negatives=self._negative_conditions() if contrastive else None)
            fake_logits = self.D_train(fake_in, fake_cond).float()
        real_logits = out.logits.float()
        mismatch = out.mismatch.float() if out.mismatch is not None else None
        loss = matching_aware_hinge_d_loss(real_logits, fake_logits, mismatch, x.mismatch_weight)
        if contrastive:
            con = info_nce(out.image_embedding.float(), out.text_embedding.float(),
                           negatives=out.negative_embedding.float())
            loss = loss + x.contrastive_weight * con
            self._record_extra("con_d", con)
        if magp_active:
            magp = matching_aware_gradient_penalty(real_logits, real_in, out.text, x.magp_power)
            loss = loss + x.magp_weight * magp * t.r1_every
            self._record_extra("magp", magp)
        norm = self._backward_step(loss, self.opt_d, self.scaler_d, list(self.D.parameters()))
        self.augment.accumulate(real_logits)
        if mismatch is not None:
            self._record_extra("d_mismatch", mismatch.mean())
            self._record_extra("acc_mismatch", (mismatch < 0).float().mean())
        self._record_d_step(loss, real_logits, fake_logits, norm)

    def g_step(self, fake: torch.Tensor, cond: torch.Tensor) -> None:
        x = self.config.text
        fake_in = self.augment(fake, self.aug_gen)
        contrastive = x.contrastive_weight > 0
        paired = self._real_images is not None and self._real_images.shape[0] == fake.shape[0]
        matching = x.feature_matching_weight > 0 and paired
        with self.precision.autocast():
            out = self.D_frozen(fake_in, cond, embed=contrastive, features=matching, full=True,
                                negatives=self._negative_conditions() if contrastive else None)
            if matching:
                with torch.no_grad():
                    real_maps = self.D_frozen(self._real_images, cond, features=True).features
        loss = -out.logits.float().mean()
        if contrastive:
            con = info_nce(out.image_embedding.float(), out.text_embedding.float(), symmetric=False,
                           negatives=out.negative_embedding.float())
            loss = loss + x.contrastive_weight * con
            self._record_extra("con_g", con)
        if matching:
            fm = paired_feature_matching(out.features, real_maps)
            loss = loss + x.feature_matching_weight * fm
            self._record_extra("fm", fm)
        if x.pixel_weight > 0 and paired:
            pixel = (fake.float() - self._real_images.float()).abs().mean()
            loss = loss + x.pixel_weight * pixel
            self._record_extra("pixel", pixel)
        norm = self._backward_step(loss, self.opt_g, self.scaler_g, list(self.G.parameters()))
        self._record_g_step(loss, norm)


class AttributeMonitor:
    """Every ``train.eval_every`` steps (``shapes`` only): attribute accuracy and FD of the sampling
    generator's images for fixed seen and held-out prompts (``eval_num`` each, capped at 1000),
    written to metrics.jsonl as ``seen_color``, ..., ``heldout_all``, ``seen_fd``, ``heldout_fd``."""

    def __init__(self, trainer: TextToImageTrainer, seed: int = 0):
        from ganfuse.metrics.t2i import shapes_prompt_sets

        t = trainer.config.train
        self.every = t.eval_every
        self.sets = shapes_prompt_sets(min(t.eval_num, 1000), seed, trainer.config.data.image_size,
                                       trainer.holdout)
        self.conditions = {k: trainer.encode(s.prompts) for k, s in self.sets.items()}
        gen = torch.Generator().manual_seed(seed + 17)
        self.z = {k: torch.randn(len(s.prompts), trainer.config.model.z_dim, generator=gen).to(trainer.device)
                  for k, s in self.sets.items()}

    @torch.no_grad()
    def __call__(self, trainer: TextToImageTrainer) -> dict[str, float]:
        if trainer.step % self.every != 0:
            return {}
        from ganfuse.metrics.t2i import score_images

        g = trainer.sampling_generator
        was_training = g.training
        g.eval()
        record = {}
        for name, prompt_set in self.sets.items():
            images = torch.cat([g(z, c).float().cpu() for z, c in zip(self.z[name].split(500),
                                                                     self.conditions[name].split(500), strict=True)])
            for key, value in score_images(images, prompt_set).items():
                record[f"{name}_{key}"] = round(value, 4)
        g.train(was_training)
        return record


def build_t2i_trainer(config: Config, out: str | Path, resume: bool = False, progress: bool = True) -> TextToImageTrainer:
    """The trainer with its callbacks: extra loss statistics at every log step, and the attribute
    monitor when ``train.eval_every`` is set on ``shapes``."""
    trainer = TextToImageTrainer(config, out, resume=resume, progress=progress)
    trainer.callbacks.append(lambda tr: tr.flush_extra_stats())
    if config.train.eval_every > 0 and trainer.dist.is_main:
        if config.data.name == "shapes":
            trainer.callbacks.append(AttributeMonitor(trainer))
        else:
            log.warning("train.eval_every: attribute accuracy needs data.name=shapes; not tracked")
    if config.train.monitor_every > 0:
        log.warning("train.monitor_every: the mode-collapse monitor is for class/unconditional runs; ignored")
    return trainer
