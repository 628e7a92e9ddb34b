"""Diversity of a text-to-image sampler where its caption leaves things open.

A caption that fixes an image up to a little jitter (``shapes``) or leaves whole positions open
(``scenes``) should give different images for different seeds, spread as the real images of that
caption are. Two figures, for ``K`` samples of each prompt (``K`` seeds):

- **spread**: where one named object lies in each sample (the centre of its bounding box, as the
  scene parser reads it), and the RMS distance of those centres to their mean, in pixels; the
  same statistic over real images of the same caption, parsed the same way, so that the parser's
  noise is on both sides. ``spread_ratio`` is generated / real (1 for a sampler that draws as the
  data does, 0 for one that ignores its noise).
- **duplicates**: pairs of samples of one prompt whose mean absolute pixel difference (images in
  [0, 1]) is below 1/255, "the same image"; the share of prompts with any such pair.

This module holds the shared statistics and the ``shapes`` figure (one object per image: the
caption fixes colour, shape, size and a 3x3 cell, the data adds up to +-S/32 of jitter);
:mod:`ganfuse.metrics.scene_t2i` holds the ``scenes`` figure.

Metrics see images only: the caller passes a ``sample_fn(prompts, seed) -> images``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ganfuse.data.shapes import (
    DEFAULT_HOLDOUT,
    MAX_JITTER_FRACTION,
    ShapesDataset,
    render_shapes,
)
from ganfuse.metrics.inputs import MetricInputError
from ganfuse.metrics.scenes import segment
from ganfuse.metrics.settings import DIVERSITY_PROMPTS, DIVERSITY_SAMPLES
from ganfuse.metrics.t2i import parse_holdout

SampleFn = Callable[[list[str], int], torch.Tensor]
SAME_IMAGE_MAD = 1.0 / 255.0  # mean absolute difference in [0, 1] below which two images are "the same"
_SHAPES_REAL_STREAM = 7  # a SeedSequence key of the real jitters, apart from the prompts' own stream


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] float ``(..., 3, S, S)`` -> float32 in [0, 1], same shape."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise MetricInputError(f"expected float images in [-1, 1] or uint8, got dtype {images.dtype}")
    return (images.detach().float().cpu() + 1.0) / 2.0


def duplicate_pairs(samples: torch.Tensor) -> tuple[int, int]:
    """``(same, pairs)`` among ``samples`` ``(K, 3, S, S)`` of one prompt: the number of pairs
    whose mean absolute difference in [0, 1] is below :data:`SAME_IMAGE_MAD`, and of all pairs."""
    flat = unit_images(samples).flatten(1).double()
    k = flat.shape[0]
    mad = torch.cdist(flat, flat, p=1.0) / flat.shape[1]  # (K, K)
    rows, cols = torch.triu_indices(k, k, 1)
    return int((mad[rows, cols] < SAME_IMAGE_MAD).sum()), k * (k - 1) // 2


def rms_spread(centres: np.ndarray) -> float:
    """RMS distance of ``centres`` ``(m, 2)`` (pixels) to their mean; 0 for one centre."""
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt(((c - c.mean(axis=0)) ** 2).sum(axis=1).mean()))


def indicator_std(flags: Sequence[bool]) -> float:
    """Standard deviation of a 0/1 indicator, ``sqrt(p (1 - p))`` (0 when all agree)."""
    p = float(np.mean(np.asarray(flags, dtype=np.float64)))
    return float(np.sqrt(p * (1.0 - p)))


def ratio(generated: float | None, real: float | None) -> float | None:
    """``generated / real``, None when either is missing or the real one is 0."""
    if generated is None or real is None or real <= 0.0:
        return None
    return generated / real


def draw_samples(sample_fn: SampleFn, prompts: list[str], samples: int, seed: int) -> torch.Tensor:
    """``samples`` images per prompt, ``(K, P, 3, S, S)``: sample ``k`` of every prompt comes from
    ``sample_fn(prompts, seed + k)``."""
    if samples < 2:
        raise MetricInputError(f"diversity needs at least 2 samples per prompt, got {samples}")
    if not prompts:
        raise MetricInputError("diversity needs at least one prompt")
    draws = []
    for k in range(samples):
        images = sample_fn(list(prompts), seed + k)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != len(prompts):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise MetricInputError(
                f"the sampler must return one (3, S, S) image per prompt, (P, 3, S, S) with P="
                f"{len(prompts)}; got {shape}"
            )
        draws.append(images.detach().cpu())
    return torch.stack(draws)


def duplicate_summary(samples: torch.Tensor) -> dict[str, float]:
    """``duplicates`` (share of prompts with at least one pair of the same image) and
    ``duplicate_pairs`` (share of all pairs that are the same image) of ``samples``
    ``(K, P, 3, S, S)``."""
    counts = [duplicate_pairs(samples[:, i]) for i in range(samples.shape[1])]
    same = sum(s for s, _ in counts)
    pairs = sum(p for _, p in counts)
    return {
        "duplicates": sum(s > 0 for s, _ in counts) / len(counts),
        "duplicate_pairs": same / pairs,
    }


def largest_component_centres(images: torch.Tensor, colors: Sequence[str]) -> list[tuple[float, float] | None]:
    """For each image ``(B, 3, S, S)`` (uint8 or [-1, 1]; S 32 or 64) the centre ``(x, y)`` of the
    bounding box of its largest component of colour ``colors[i]`` (the scene parser's colour
    segmentation; every ``shapes`` colour is a ``scenes`` colour), None where there is none."""
    out: list[tuple[float, float] | None] = []
    for components, color in zip(segment(images), colors, strict=True):
        mine = [c for c in components if c.color == color]
        if not mine:
            out.append(None)
            continue
        biggest = max(mine, key=lambda c: (c.bbox[2] - c.bbox[0]) * (c.bbox[3] - c.bbox[1]))
        out.append(biggest.center)
    return out


def shapes_diversity(sample_fn: SampleFn, num_prompts: int = DIVERSITY_PROMPTS,
                     samples: int = DIVERSITY_SAMPLES, seed: int = 0, image_size: int = 32,
                     holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT) -> dict[str, float | int | None]:
    """Spread and duplicates of a ``shapes`` text-to-image sampler on ``num_prompts`` real
    ``test`` captions, ``samples`` seeds each.

    The real reference of a caption is ``samples`` fresh renders of its attributes with the data's
    jitter (uniform within +-S/32 per axis). The object is the largest component of the caption's
    colour; a prompt's spread is over the samples where one is found (``m`` of them, at least 2)
    and its real spread over the first ``m`` real renders. Returns ``prompts``, ``samples``,
    ``center_spread`` and ``center_spread_real`` (pixels, averaged over prompts), ``spread_ratio``,
    ``bound`` (share of samples where the object was found), ``duplicates`` and
    ``duplicate_pairs``, and the same two for the real renders (``duplicates_real``,
    ``duplicate_pairs_real``)."""
    data = ShapesDataset("test", num=num_prompts, seed=seed, image_size=image_size, holdout=holdout)
    prompts = list(data.captions)
    colors = [a.color for a in data.attributes]
    generated = draw_samples(sample_fn, prompts, samples, seed)  # (K, P, 3, S, S)
    found = [largest_component_centres(generated[k], colors) for k in range(samples)]

    rng = np.random.default_rng(np.random.SeedSequence([seed, _SHAPES_REAL_STREAM]))
    jitters = (rng.random((samples * len(prompts), 2)) * 2.0 - 1.0) * MAX_JITTER_FRACTION
    real = render_shapes(list(data.attributes) * samples, image_size, jitters)  # sample-major
    real_images = torch.from_numpy(real).permute(0, 3, 1, 2)
    real_found = largest_component_centres(real_images, colors * samples)

    spreads, real_spreads = [], []
    bound = 0
    for i in range(len(prompts)):
        centres = [found[k][i] for k in range(samples) if found[k][i] is not None]
        bound += len(centres)
        if len(centres) < 2:
            continue
        reference = [real_found[k * len(prompts) + i] for k in range(samples)]
        reference = [c for c in reference if c is not None][: len(centres)]
        spreads.append(rms_spread(np.array(centres)))
        real_spreads.append(rms_spread(np.array(reference)))
    spread = float(np.mean(spreads)) if spreads else None
    real_spread = float(np.mean(real_spreads)) if real_spreads else None
    return {
        "prompts": len(prompts),
        "samples": samples,
        "center_spread": spread,
        "center_spread_real": real_spread,
        "spread_ratio": ratio(spread, real_spread),
        "bound": bound / (samples * len(prompts)),
        **duplicate_summary(generated),
        # the data's own renders of one caption coincide now and then (a jitter below a pixel)
        **{f"{k}_real": v for k, v in duplicate_summary(real_images.reshape(generated.shape)).items()},
    }


def _cell(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_shapes_diversity(result: dict) -> str:
    """One line per figure of :func:`shapes_diversity`."""
    return "\n".join([
        f"diversity: {result['prompts']} prompts x {result['samples']} seeds",
        f"  centre spread {_cell(result['center_spread'])} px, real {_cell(result['center_spread_real'])} px,"
        f" ratio {_cell(result['spread_ratio'])} (target >= 0.7); object found in"
        f" {_cell(result['bound'], 100, 1)}% of samples",
        f"  prompts with two identical samples {_cell(result['duplicates'], 100, 1)}%"
        f" (real renders {_cell(result['duplicates_real'], 100, 1)}%), identical pairs"
        f" {_cell(result['duplicate_pairs'], 100, 1)}% (real {_cell(result['duplicate_pairs_real'], 100, 1)}%)",
    ])


def shapes_diversity_run(run, num_prompts: int = DIVERSITY_PROMPTS, seed: int = 0) -> dict[str, float | int | None]:
    """:func:`shapes_diversity` of a loaded ``shapes`` text-to-image run (anything with ``config``
    and ``sample(n, seed=..., prompts=...)``), at the run's image size and with its held-out pairs."""
    holdout = parse_holdout(run.config.data.holdout) or DEFAULT_HOLDOUT
    return shapes_diversity(lambda prompts, s: run.sample(1, seed=s, prompts=prompts), num_prompts,
                            DIVERSITY_SAMPLES, seed, run.config.data.image_size, holdout)
