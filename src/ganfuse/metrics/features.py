"""Running an extractor over a stream of uint8 batches and holding the result."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ganfuse.errors import DataError
from ganfuse.metrics.extractors import FeatureExtractor
from ganfuse.metrics.frechet import FeatureStats


@dataclass
class ExtractedFeatures:
    """Features ``(N, D)`` float32 and class probabilities ``(N, K)`` (or None) of N images."""

    features: torch.Tensor
    probs: torch.Tensor | None = None
    _stats: FeatureStats | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return self.features.shape[0]

    def stats(self) -> FeatureStats:
        """float64 mean and covariance, computed once."""
        if self._stats is None:
            self._stats = FeatureStats.from_features(self.features)
        return self._stats


def extract_features(
    batches: Iterable[torch.Tensor],
    extractor: FeatureExtractor,
    limit: int,
    with_probs: bool = True,
    progress: bool = False,
    desc: str = "features",
) -> ExtractedFeatures:
    """Run ``extractor`` over uint8 ``batches`` ``(B, C, H, W)`` totalling at most ``limit`` images.

    Output buffers are allocated once for ``limit`` rows, so peak memory is the features plus one
    batch of images, however many images stream through.
    """
    feats = torch.empty(limit, extractor.feature_dim, dtype=torch.float32)
    keep_probs = with_probs and extractor.num_classes > 0
    probs = torch.empty(limit, extractor.num_classes, dtype=torch.float32) if keep_probs else None
    count = 0
    with tqdm(total=limit, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images in batches:
            take = min(images.shape[0], limit - count)
            if take <= 0:
                break
            f, p = extractor.features_and_probs(images[:take])
            feats[count : count + take] = f
            if probs is not None:
                probs[count : count + take] = p
            count += take
            bar.update(take)
    if count < 2:
        raise DataError(f"only {count} image(s) could be read; metrics need at least 2")
    return ExtractedFeatures(feats[:count], None if probs is None else probs[:count])
