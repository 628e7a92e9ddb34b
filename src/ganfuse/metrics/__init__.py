"""Evaluation: distances and scores between generated and real images, computed on features.

Pure functions on features (any float dtype; statistics in float64)::

    fid_from_features(a, b) -> float
    fid_from_stats(mu1, s1, mu2, s2) -> float
    kid_from_features(a, b, subsets=100, subset_size=1000, seed=0) -> (mean, std)
    inception_score_from_probs(p, splits=10) -> (mean, std)
    precision_recall_from_features(real, fake, k=3) -> (precision, recall)
    density_coverage_from_features(real, fake, k=5) -> (density, coverage)

Feature extractors (:func:`get_extractor`) turn uint8 images into features, and the pipeline in
:mod:`ganfuse.metrics.evaluate` streams images from a run, a folder or a dataset through them.
Names are imported on first use, so that the CLI can read this package's settings without
importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureStats": "ganfuse.metrics.frechet",
    "fid_from_features": "ganfuse.metrics.frechet",
    "fid_from_stats": "ganfuse.metrics.frechet",
    "kid_from_features": "ganfuse.metrics.kid",
    "inception_score_from_probs": "ganfuse.metrics.inception_score",
    "precision_recall_from_features": "ganfuse.metrics.prdc",
    "density_coverage_from_features": "ganfuse.metrics.prdc",
    "MetricInputError": "ganfuse.metrics.inputs",
    "to_uint8": "ganfuse.data.base",
    "get_extractor": "ganfuse.metrics.extractors",
    "compute_metrics": "ganfuse.metrics.evaluate",
    "evaluate_source": "ganfuse.metrics.evaluate",
    "extract_features": "ganfuse.metrics.evaluate",
    "frechet_distance_of_generator": "ganfuse.metrics.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ganfuse.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
