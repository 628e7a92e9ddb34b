"""Features of a reference dataset, cached on disk and in memory.

A cache entry is keyed by dataset, extractor, resize, the extractor's weights fingerprint and N,
and stored as one safetensors file under ``<cache>/reference/`` holding the features and their float64
mean and covariance. Writes are atomic (:mod:`ganfuse.fileio`), so an interrupted run never leaves
a half-written entry.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganfuse.cache import cache_dir
from ganfuse.fileio import atomic_write
from ganfuse.metrics.extractors import FeatureExtractor
from ganfuse.metrics.features import ExtractedFeatures, extract_features
from ganfuse.metrics.frechet import FeatureStats
from ganfuse.metrics.sources import open_reference

_MEMORY: dict[tuple[object, ...], ExtractedFeatures] = {}


def cache_path(dataset: str, extractor: FeatureExtractor, n: int) -> Path:
    name = f"{dataset}__{extractor.name}__{extractor.resize}__{extractor.fingerprint}__n{n}.safetensors"
    return cache_dir() / "reference" / name


def _save(path: Path, feats: ExtractedFeatures) -> None:
    stats = feats.stats()
    tensors = {"features": feats.features.contiguous(), "mean": stats.mean, "cov": stats.cov}
    if feats.probs is not None:
        tensors["probs"] = feats.probs.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"n": str(feats.n)}))


def _load(path: Path) -> ExtractedFeatures | None:
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError):
        return None  # a damaged entry is recomputed and overwritten
    stats = FeatureStats(mean=t["mean"], cov=t["cov"], n=t["features"].shape[0])
    return ExtractedFeatures(t["features"], t.get("probs"), _stats=stats)


def reference_features(
    dataset: str, extractor: FeatureExtractor, num: int, batch_size: int, progress: bool = False
) -> ExtractedFeatures:
    """Features of the first ``min(num, len(dataset))`` images of ``dataset``, from the cache when
    possible."""
    key = (str(cache_dir()), dataset, extractor.name, extractor.resize, extractor.fingerprint, num)
    if key in _MEMORY:
        return _MEMORY[key]
    source = open_reference(dataset, extractor.channels, extractor.input_size)
    n = min(num, source.available())
    path = cache_path(dataset, extractor, n)
    cached = _load(path) if path.is_file() else None
    if cached is None or cached.n != n:
        cached = extract_features(
            source.batches(n, batch_size),
            extractor,
            n,
            with_probs=False,  # the metrics use the generated images' probabilities only
            progress=progress,
            desc=f"features {dataset}",
        )
        _save(path, cached)
    _MEMORY[key] = cached
    return cached
