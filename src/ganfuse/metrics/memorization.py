"""Memorisation audit: how close generated images come to the images the generator trained on,
compared with how close real images it never saw come.

Everything is measured in one extractor's features ``phi`` (the shipped ``digits`` or ``shapes``
classifier, or Inception), with Euclidean distance:

- ``d(x) = min_j ||phi(x) - phi(t_j)||``: an image's distance to its nearest training image;
- the **reference**: ``d(h)`` for real held-out images ``h`` (real images of the same kind that
  the generator never trained on). When none are given, each training image's distance to its
  nearest *other* training image stands in (leave-one-out), and the result says so;
- ``scale = median_h d(h)``, the distance at which a fresh real image typically sits from the
  training set;
- **ratio** of a sample ``s``: ``r(s) = d(s) / scale``. About 1 for a sample as novel as a fresh
  real image; near 0 for a copy; above 1 for samples further from the data than real images are;
- ``median_ratio``: the median of ``r`` over the samples;
- ``closer_share``: the share of samples closer to a training image than 95% of held-out real
  images are, ``mean_s [d(s) < q_0.05(d(h))]``. Samples distributed like fresh real images score
  about 0.05 (by construction of the quantile); a generator that copies scores near 1;
- ``near_copy_share``: the share of samples with ``r(s) < near_copy`` (default 1/3: a third of the
  typical real distance, the same factor as the ratio test of Carlini et al. 2023, "Extracting
  training data from diffusion models"), reported next to ``heldout_near_copy_share``, the share of
  the held-out real images under the same threshold (how often that closeness happens by chance);
- the closest pairs: the samples of smallest ratio with their nearest training images.

    audit = memorization_audit(sample_features, train_features, heldout_features)
    audit.closer_share, audit.near_copy_share, audit.pairs   # [(sample index, train index, ratio)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch

from ganfuse.data.base import to_uint8
from ganfuse.errors import DataError
from ganfuse.metrics.extractors import FeatureExtractor
from ganfuse.metrics.features import extract_features

NEAR_COPY = 1.0 / 3.0
REFERENCE_QUANTILE = 0.05
PAIRS = 8
MAX_REFERENCE = 2000  # leave-one-out reference: training images used (a seeded subset beyond this)
MEMORIZATION_FILE = "memorization.json"  # in a run folder, read by the report and the model card
MEMORIZATION_PICTURE = "memorization.png"  # the closest pairs, samples above their training images


def nearest_neighbours(
    queries: torch.Tensor,
    keys: torch.Tensor,
    exclude: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``queries`` ``(N, D)``, the Euclidean distance to its nearest row of ``keys``
    ``(M, D)`` and that row's index: ``(N,)`` float64 and ``(N,)`` int64. ``exclude`` ``(N,)``
    names a key each query may not match (itself, for leave-one-out). Computed in float64, in
    chunks of ``chunk`` queries so memory stays ``chunk * M``."""
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise DataError(
            f"features must be (N, D) and (M, D); got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if keys.shape[0] < (2 if exclude is not None else 1):
        raise DataError(
            f"need at least {2 if exclude is not None else 1} training images, got {keys.shape[0]}"
        )
    keys64 = keys.double()
    dists, index = [], []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk].double(), keys64)
        if exclude is not None:
            rows = torch.arange(d.shape[0])
            d[rows, exclude[start : start + chunk]] = float("inf")
        best = d.min(dim=1)
        dists.append(best.values)
        index.append(best.indices)
    return torch.cat(dists), torch.cat(index)


@dataclass
class MemorizationAudit:
    """The audit's figures (see the module docstring) and, per sample, its nearest training image
    (``nearest``) and ratio (``ratios``), both ``(n_samples,)``."""

    n_samples: int
    n_train: int
    n_reference: int
    reference: str  # "held-out" or "leave-one-out"
    scale: float  # median distance of a reference real image to its nearest training image
    median_ratio: float
    closer_share: float
    near_copy_share: float
    heldout_near_copy_share: float
    near_copy: float = NEAR_COPY
    quantile: float = REFERENCE_QUANTILE
    pairs: list[tuple[int, int, float]] = field(
        default_factory=list
    )  # (sample, train, ratio), closest first
    extractor: str = ""
    ratios: torch.Tensor | None = field(default=None, repr=False)
    nearest: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("ratios"), data.pop("nearest")
        data["pairs"] = [[s, t, round(r, 6)] for s, t, r in self.pairs]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        rows = [
            ("median ratio d(sample) / median d(real)", f"{self.median_ratio:.4f}"),
            (
                f"closer than {1 - self.quantile:.0%} of the reference reals",
                f"{self.closer_share:.4f}",
            ),
            (f"near copies (ratio < {self.near_copy:.3g})", f"{self.near_copy_share:.4f}"),
            ("  reference reals under the same threshold", f"{self.heldout_near_copy_share:.4f}"),
        ]
        width = max(len(name) for name, _ in rows)
        head = (
            f"memorization in {self.extractor or 'extractor'} features: {self.n_samples} samples vs "
            f"{self.n_train} training images, reference {self.reference} ({self.n_reference} images, "
            f"median distance {self.scale:.4g})"
        )
        pairs = ", ".join(f"sample {s} ~ train {t} ({r:.3f})" for s, t, r in self.pairs[:4])
        return "\n".join(
            [
                head,
                *(f"  {name:<{width}}  {value}" for name, value in rows),
                f"  closest pairs: {pairs}",
            ]
        )


def memorization_audit(
    samples: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor | None = None,
    near_copy: float = NEAR_COPY,
    quantile: float = REFERENCE_QUANTILE,
    pairs: int = PAIRS,
    max_reference: int = MAX_REFERENCE,
    seed: int = 0,
    extractor: str = "",
) -> MemorizationAudit:
    """The audit of sample features ``(S, D)`` against training features ``(T, D)``, with
    held-out real features ``(H, D)`` as the reference (leave-one-out in the training set when
    ``None``: at most ``max_reference`` training images, a subset drawn from ``seed``)."""
    if not 0 < near_copy:
        raise DataError(f"near_copy must be > 0, got {near_copy}")
    if not 0 < quantile < 1:
        raise DataError(f"quantile must be in (0, 1), got {quantile}")
    if samples.shape[0] < 1:
        raise DataError("the memorisation audit needs at least one sample")
    d_samples, nearest = nearest_neighbours(samples, train)
    if heldout is not None:
        if heldout.shape[0] < 2:
            raise DataError(f"need at least 2 held-out real images, got {heldout.shape[0]}")
        d_ref, _ = nearest_neighbours(heldout, train)
        reference = "held-out"
    else:
        pick = torch.arange(train.shape[0])
        if train.shape[0] > max_reference:
            pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[
                :max_reference
            ]
        d_ref, _ = nearest_neighbours(train[pick], train, exclude=pick)
        reference = "leave-one-out"
    scale = float(d_ref.median())
    if not scale > 0:
        raise DataError(
            "the reference images sit on training images (median distance 0): "
            "give held-out images that are not in the training set"
        )
    ratios = d_samples / scale
    threshold = float(torch.quantile(d_ref, quantile))
    order = torch.argsort(ratios)[:pairs]
    return MemorizationAudit(
        n_samples=int(samples.shape[0]),
        n_train=int(train.shape[0]),
        n_reference=int(d_ref.shape[0]),
        reference=reference,
        scale=scale,
        median_ratio=float(ratios.median()),
        closer_share=float((d_samples < threshold).double().mean()),
        near_copy_share=float((ratios < near_copy).double().mean()),
        heldout_near_copy_share=float((d_ref / scale < near_copy).double().mean()),
        near_copy=near_copy,
        quantile=quantile,
        pairs=[(int(i), int(nearest[i]), float(ratios[i])) for i in order],
        extractor=extractor,
        ratios=ratios,
        nearest=nearest,
    )


def _uint8_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        yield batch if batch.dtype == torch.uint8 else to_uint8(batch)


def image_features(
    images: torch.Tensor, extractor: FeatureExtractor, batch_size: int | None = None
) -> torch.Tensor:
    """``extractor``'s features ``(N, D)`` of images ``(N, C, H, W)``, uint8 or float in [-1, 1]."""
    batch = batch_size or extractor.batch_size
    return extract_features(
        _uint8_batches(images, batch), extractor, images.shape[0], with_probs=False
    ).features


def audit_images(
    samples: torch.Tensor,
    train: torch.Tensor,
    extractor: FeatureExtractor,
    heldout: torch.Tensor | None = None,
    batch_size: int | None = None,
    **options: object,
) -> MemorizationAudit:
    """:func:`memorization_audit` of images ``(N, C, H, W)`` (uint8, or float in [-1, 1]) in
    ``extractor``'s features; ``options`` as :func:`memorization_audit` takes them."""
    feats = [
        image_features(x, extractor, batch_size) if x is not None else None
        for x in (samples, train, heldout)
    ]
    return memorization_audit(feats[0], feats[1], feats[2], extractor=extractor.name, **options)


def closest_pairs(
    samples: torch.Tensor, train: torch.Tensor, audit: MemorizationAudit
) -> torch.Tensor:
    """``(2k, C, H, W)``: the audit's ``k`` closest samples, then their nearest training images in
    the same order (tiled ``k`` to a row: samples above their training neighbours)."""
    if not audit.pairs:
        raise DataError("the audit holds no pairs")
    s_idx = torch.tensor([s for s, _, _ in audit.pairs])
    t_idx = torch.tensor([t for _, t, _ in audit.pairs])
    top, bottom = samples[s_idx], train[t_idx]
    if top.dtype != bottom.dtype:
        top, bottom = (
            to_uint8(top) if top.dtype != torch.uint8 else top,
            to_uint8(bottom) if bottom.dtype != torch.uint8 else bottom,
        )
    if top.shape[1:] != bottom.shape[1:]:
        raise DataError(
            f"samples {tuple(top.shape[1:])} and training images {tuple(bottom.shape[1:])} "
            "differ in shape; resize them alike before drawing pairs"
        )
    return torch.cat([top, bottom])
