"""Text-to-image evaluation on ``shapes``: does each generated image show what its prompt asked?

Prompts are real captions of the ``test`` split (colour-shape pairs seen in training, captions
and jitter new) and of the ``heldout`` split (pairs never trained on). For each set, the shipped
attribute classifier (:mod:`ganfuse.metrics.attributes`) gives per-attribute accuracy against
the prompt's attributes (``color``, ``shape``, ``size``, ``position`` and ``all`` four at once),
and the Frechet distance in that classifier's features compares the images with the real images
the prompts describe (``fd``; 0 for identical statistics; same number of images on both sides).

Metrics see images only: the caller passes a ``sample_fn(prompts, seed) -> images``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ganfuse.data.base import to_uint8
from ganfuse.data.shapes import DEFAULT_HOLDOUT, ShapeAttributes, ShapesDataset
from ganfuse.errors import ConfigError
from ganfuse.metrics.attributes import attribute_accuracy, shapes_extractor
from ganfuse.metrics.frechet import fid_from_features
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.rprec import ImageTextEmbedder, r_precision

PROMPT_SETS: dict[str, str] = {"seen": "test", "heldout": "heldout"}  # name -> shapes split
SampleFn = Callable[[list[str], int], torch.Tensor]


def parse_holdout(pairs: list[str] | None) -> tuple[tuple[str, str], ...] | None:
    """``["red triangle", ...]`` -> ``(("red", "triangle"), ...)``; None stays None (the default)."""
    if pairs is None:
        return None
    out = []
    for item in pairs:
        words = item.replace("-", " ").split()
        if len(words) != 2:
            raise ConfigError(f"data.holdout entries must be 'colour shape', e.g. 'red triangle'; got {item!r}")
        out.append((words[0].lower(), words[1].lower()))
    return tuple(out)


@dataclass
class PromptSet:
    """Prompts with the attributes they state and the real images ``(N, 3, S, S)`` uint8 they
    caption."""

    name: str
    prompts: list[str]
    attributes: list[ShapeAttributes]
    real_images: torch.Tensor


def shapes_prompt_sets(num: int = 500, seed: int = 0, image_size: int = 32,
                       holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT) -> dict[str, PromptSet]:
    """``{"seen": ..., "heldout": ...}``, ``num`` prompts each (deterministic for ``seed``)."""
    if num < 2:
        raise MetricInputError(f"text-to-image evaluation needs at least 2 prompts per set, got {num}")
    sets = {}
    for name, split in PROMPT_SETS.items():
        data = ShapesDataset(split, num=num, seed=seed, image_size=image_size, holdout=holdout)
        sets[name] = PromptSet(name, list(data.captions), list(data.attributes), data.images)
    return sets


def score_images(images: torch.Tensor, prompt_set: PromptSet, extractor=None) -> dict[str, float]:
    """Per-attribute accuracy and ``fd`` of ``images`` ``(N, 3, H, W)`` (uint8 or [-1, 1]), one
    per prompt of ``prompt_set``."""
    if images.shape[0] != len(prompt_set.prompts):
        raise MetricInputError(
            f"{images.shape[0]} images for {len(prompt_set.prompts)} prompts of {prompt_set.name!r}"
        )
    result = attribute_accuracy(images, prompt_set.attributes)
    extractor = extractor or shapes_extractor()
    fake = extractor.features(to_uint8(images.detach().cpu()))
    real = extractor.features(prompt_set.real_images)
    result["fd"] = fid_from_features(real, fake)
    return result


def evaluate_t2i(sample_fn: SampleFn, num: int = 500, seed: int = 0, image_size: int = 32,
                 holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT,
                 rprec_model: ImageTextEmbedder | None = None) -> dict[str, dict[str, float]]:
    """``{"seen": {...}, "heldout": {...}}`` of :func:`score_images` for images drawn by
    ``sample_fn(prompts, seed)`` (one image per prompt).

    With ``rprec_model`` (a dual encoder, e.g. a ``zeroshot`` run loaded with
    :func:`ganfuse.multimodal.zeroshot.load_dual_encoder`) each set also gets ``rprec``:
    R-precision, the image's own prompt ranked against 99 others drawn from both sets' prompts
    (:func:`ganfuse.metrics.rprec.r_precision`; chance 0.01)."""
    extractor = shapes_extractor()
    sets = shapes_prompt_sets(num, seed, image_size, holdout)
    if rprec_model is not None:
        pool = [p for s in sets.values() for p in s.prompts]
    out = {}
    for name, prompt_set in sets.items():
        images = sample_fn(prompt_set.prompts, seed)
        out[name] = score_images(images, prompt_set, extractor)
        if rprec_model is not None:
            out[name]["rprec"] = r_precision(images.float(), prompt_set.prompts, rprec_model,
                                             seed=seed, distractor_pool=pool)
    return out


def format_t2i(result: dict[str, dict[str, float]]) -> str:
    """A small table: one row per prompt set, accuracy in percent, FD."""
    keys = ("color", "shape", "size", "position", "all")
    extra = ("rprec",) if all("rprec" in row for row in result.values()) else ()
    lines = ["set       " + " ".join(f"{k:>8}" for k in keys + extra) + "       fd"]
    for name, row in result.items():
        cells = " ".join(f"{100 * row[k]:8.1f}" for k in keys + extra)
        lines.append(f"{name:<9} {cells} {row['fd']:8.3f}")
    return "\n".join(lines) + "\n(accuracy and R-precision in percent; fd in the attribute classifier's features)"


def evaluate_t2i_run(run, num: int = 500, seed: int = 0,
                     rprec_model: ImageTextEmbedder | None = None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_t2i` of a loaded text-to-image run (anything with ``config`` and
    ``sample(n, seed=..., prompts=...)``, e.g. :class:`ganfuse.run.TextToImageRun`), with the
    run's image size and held-out pairs."""
    holdout = parse_holdout(run.config.data.holdout) or DEFAULT_HOLDOUT
    return evaluate_t2i(lambda prompts, s: run.sample(1, seed=s, prompts=prompts), num, seed,
                        run.config.data.image_size, holdout, rprec_model)
