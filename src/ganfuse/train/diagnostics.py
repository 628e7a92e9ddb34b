"""Diagnostics for the founding document's FAQ, computed at log steps and written to metrics.jsonl.

- Vanishing gradients: the loop already logs ``grad_norm_g``/``grad_norm_d`` and D's accuracy on
  real and fake (``acc_real``/``acc_fake``): a D at 100% with a G gradient norm near 0 is the
  textbook picture.
- Mode collapse (:class:`ModeCollapseMonitor`): on labelled data with a dataset classifier
  (``digits``), the share of a fixed batch of samples per predicted class, the number of classes
  holding at least half their fair share (``mc_classes``), and the largest share
  (``mc_max_share``); on any data, the mean pairwise L2 distance of the samples relative to that of
  real images (``mc_diversity``; near 0 means the samples are all alike).
- Quality over time (:class:`FrechetEvaluator`): Frechet distance of ``eval_num`` samples in the
  dataset's features, and the ``best`` checkpoint kept beside the latest.
"""

from __future__ import annotations

import logging
import math

import torch

from ganfuse.metrics import frechet_distance_of_generator, to_uint8
from ganfuse.metrics.extractors import get_extractor
from ganfuse.metrics.scene_t2i import scene_t2i_prompt_sets, score_scene_t2i
from ganfuse.metrics.t2i import score_images, shapes_prompt_sets

log = logging.getLogger("ganfuse")

CLASSIFIER_EXTRACTORS = {"digits": "digits"}  # dataset name -> extractor with class probabilities


@torch.no_grad()
def _samples(trainer, n: int, seed: int) -> torch.Tensor:
    """``n`` samples from the sampling generator (EMA when kept) in eval mode, float on CPU."""
    g = trainer.sampling_generator
    was_training = g.training
    g.eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, trainer.config.model.z_dim, generator=gen).to(trainer.device)
    y = None
    if trainer.num_classes:
        y = torch.randint(0, trainer.num_classes, (n,), generator=gen).to(trainer.device)
    out = []
    for start in range(0, n, 256):
        with trainer.precision.autocast():
            out.append(g(z[start:start + 256], None if y is None else y[start:start + 256]).float().cpu())
    g.train(was_training)
    return torch.cat(out)


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance over all distinct pairs of ``(N, ...)`` items."""
    flat = x.flatten(1).double()
    d = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)))


class ModeCollapseMonitor:
    def __init__(self, trainer, num: int = 500, seed: int = 4242):
        self.num, self.seed = num, seed
        self.extractor = None
        name = CLASSIFIER_EXTRACTORS.get(trainer.config.data.name)
        if name is not None and trainer.dataset.num_classes:
            self.extractor = get_extractor(name)
        real = trainer.dataset.batch(torch.arange(min(len(trainer.dataset), 256)))[0] \
            if hasattr(trainer.dataset, "batch") else None
        self.real_diversity = mean_pairwise_distance(real) if real is not None else math.nan

    def __call__(self, trainer) -> dict[str, float]:
        if trainer.step % trainer.config.train.monitor_every != 0:
            return {}
        fake = _samples(trainer, self.num, self.seed)
        record = {"mc_diversity": round(mean_pairwise_distance(fake[:256]) / self.real_diversity, 4)}
        if self.extractor is not None:
            probs = self.extractor.probs(to_uint8(fake))
            k = probs.shape[1]
            share = torch.bincount(probs.argmax(1), minlength=k).double() / len(fake)
            record["mc_classes"] = int((share >= 0.5 / k).sum())
            record["mc_max_share"] = round(float(share.max()), 4)
        return record


class FrechetEvaluator:
    """FD of ``eval_num`` samples against the training dataset; saves ``best/`` when it improves."""

    def __init__(self, trainer):
        self.ref = trainer.config.data.name
        self.n = trainer.config.train.eval_num

    def __call__(self, trainer) -> dict[str, float]:
        if trainer.step % trainer.config.train.eval_every != 0:
            return {}
        fake = _samples(trainer, self.n, seed=2024)
        cursor = {"i": 0}

        def sample_fn(b: int) -> torch.Tensor:
            start = cursor["i"]
            cursor["i"] += b
            return fake[start:start + b]

        fd = frechet_distance_of_generator(sample_fn, self.ref, self.n)
        record = {"fd": round(fd, 4)}
        if fd < trainer.best_fd:
            trainer.best_fd = fd
            trainer.save(best=True)
            record["fd_best"] = True
        return record


def attach_default_callbacks(trainer) -> None:
    """Attach the diagnostics the config asks for (``train.monitor_every``, ``train.eval_every``)."""
    t = trainer.config.train
    if t.monitor_every > 0:
        trainer.callbacks.append(ModeCollapseMonitor(trainer))
    if t.eval_every > 0:
        if trainer.config.data.name not in ("digits", "shapes", "emoji"):
            log.warning("train.eval_every: no built-in reference for %s; Frechet distance is not tracked",
                        trainer.config.data.name)
        else:
            trainer.callbacks.append(FrechetEvaluator(trainer))


class PromptMonitor:
    """Every ``train.eval_every`` steps, the sampling generator's images for fixed prompt sets
    (with fixed noise), scored by a world's judge and written to metrics.jsonl as
    ``{set}_{figure}``. Subclasses choose the sets (:meth:`prompt_sets`) and the figures
    (:meth:`score`)."""

    def __init__(self, trainer, seed: int = 0):
        self.every = trainer.config.train.eval_every
        self.sets = self.prompt_sets(trainer, seed)
        self.conditions = {k: trainer.objective.encode(s.prompts) for k, s in self.sets.items()}
        gen = torch.Generator().manual_seed(seed + 17)
        self.z = {k: torch.randn(len(s.prompts), trainer.config.model.z_dim, generator=gen).to(trainer.device)
                  for k, s in self.sets.items()}

    def prompt_sets(self, trainer, seed: int) -> dict:
        raise NotImplementedError

    def score(self, images: torch.Tensor, prompt_set) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, trainer) -> dict[str, float]:
        if trainer.step % self.every != 0:
            return {}
        g = trainer.sampling_generator
        was_training = g.training
        g.eval()
        record = {}
        for name, prompt_set in self.sets.items():
            images = torch.cat([g(z, c).float().cpu() for z, c in zip(self.z[name].split(250),
                                                                     self.conditions[name].split(250), strict=True)])
            for key, value in self.score(images, prompt_set).items():
                record[f"{name}_{key}"] = round(float(value), 4)
        g.train(was_training)
        return record


class AttributeMonitor(PromptMonitor):
    """Text-to-image on ``shapes``: attribute accuracy and FD for fixed seen and held-out prompts
    (``eval_num`` each, capped at 1000), as ``seen_color``, ..., ``heldout_all``, ``seen_fd``,
    ``heldout_fd``."""

    def prompt_sets(self, trainer, seed: int) -> dict:
        return shapes_prompt_sets(min(trainer.config.train.eval_num, 1000), seed,
                                  trainer.config.data.image_size, trainer.objective.holdout)

    def score(self, images: torch.Tensor, prompt_set) -> dict[str, float]:
        return score_images(images, prompt_set)


class SceneMonitor(PromptMonitor):
    """Text-to-image on ``scenes``: the exact judge's count, binding, relation and all-correct
    rates for fixed seen and held-out two-object prompts (``eval_num`` each, capped at 500), as
    ``seen_count``, ..., ``heldout_correct``."""

    def prompt_sets(self, trainer, seed: int) -> dict:
        sets = scene_t2i_prompt_sets(max(4, min(trainer.config.train.eval_num, 500)), seed,
                                     trainer.config.data.image_size, trainer.objective.holdout)
        return {k: sets[k] for k in ("seen", "heldout")}

    def score(self, images: torch.Tensor, prompt_set) -> dict[str, float]:
        scores = score_scene_t2i(images, prompt_set)
        return {k: scores[k] for k in ("count", "binding", "relation", "correct") if scores[k] is not None}
