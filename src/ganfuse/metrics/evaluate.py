"""The evaluation pipeline: images -> features -> metrics, for the CLI and the training loop.

    result = evaluate_source("runs/digits", "digits", metrics=["fid", "kid"], num=2000)
    print(result.format_table()); result.to_dict()

    # inside training: Frechet distance of the current generator against a dataset
    fd = frechet_distance_of_generator(lambda b: generator_sample(b), "digits", n=1000)

Features stream batch by batch (images are never all in memory). Reference features are cached
on disk (see :mod:`ganfuse.metrics.reference`). Every result records the extractor, its resize
and the number of images on each side, because FID at 5k and at 50k are different numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ganfuse.data.base import to_uint8
from ganfuse.errors import ConfigError, DataError, OfflineError
from ganfuse.metrics.extractors import FeatureExtractor, get_extractor
from ganfuse.metrics.features import ExtractedFeatures, extract_features
from ganfuse.metrics.frechet import fid_from_stats
from ganfuse.metrics.inception_score import inception_score_from_probs
from ganfuse.metrics.inception_weights import find_inception_weights
from ganfuse.metrics.kid import kid_from_features
from ganfuse.metrics.prdc import density_coverage_from_features, precision_recall_from_features
from ganfuse.metrics.reference import reference_features
from ganfuse.metrics.settings import DEFAULT_METRICS, DEFAULT_NUM, DEFAULT_RESIZE, METRICS
from ganfuse.metrics.sources import (
    DATASET_EXTRACTORS,
    FolderSource,
    ImageSource,
    RunSource,
    SampleBatches,
    is_reference_dataset,
    open_reference,
    open_source,
    reference_dataset_names,
)

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_NUM",
    "METRICS",
    "EvaluationResult",
    "ExtractedFeatures",
    "MetricOptions",
    "choose_extractor",
    "compute_metrics",
    "evaluate_source",
    "extract_features",
    "frechet_distance_of_generator",
    "parse_metrics",
]


@dataclass(frozen=True)
class MetricOptions:
    """Settings of the metrics; the defaults are the ones the papers and common tools use."""

    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    pr_k: int = 3
    dc_k: int = 5
    seed: int = 0  # KID subset sampling


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,kid"`` or ``["fid", "kid"]`` -> ``("fid", "kid")``, checked against :data:`METRICS`."""
    names = [
        m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()
    ]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metric(s) {unknown or spec!r}; choose from {','.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def compute_metrics(
    real: ExtractedFeatures,
    fake: ExtractedFeatures,
    metrics: Sequence[str],
    options: MetricOptions = MetricOptions(),
) -> dict[str, float]:
    """Metric values of ``fake`` against ``real`` (features from the same extractor).

    Keys: ``fid``; ``kid``, ``kid_std``; ``is``, ``is_std`` (of ``fake``, needs its probs);
    ``precision``, ``recall``; ``density``, ``coverage``.
    """
    out: dict[str, float] = {}
    for name in parse_metrics(metrics):
        if name == "fid":
            r, f = real.stats(), fake.stats()
            out["fid"] = fid_from_stats(r.mean, r.cov, f.mean, f.cov)
        elif name == "kid":
            out["kid"], out["kid_std"] = kid_from_features(
                real.features,
                fake.features,
                options.kid_subsets,
                options.kid_subset_size,
                options.seed,
            )
        elif name == "is":
            if fake.probs is None:
                raise ConfigError(
                    "IS needs class probabilities, which this extractor does not give"
                )
            splits = min(options.is_splits, fake.n)
            out["is"], out["is_std"] = inception_score_from_probs(fake.probs, splits)
        elif name == "pr":
            out["precision"], out["recall"] = precision_recall_from_features(
                real.features, fake.features, options.pr_k
            )
        elif name == "dc":
            out["density"], out["coverage"] = density_coverage_from_features(
                real.features, fake.features, options.dc_k
            )
    return out


def choose_extractor(ref: str, extractor: str | None = None, weights: str | None = None) -> str:
    """The extractor name to use: the given one; else ``inception`` when its weights are on disk;
    else the reference dataset's own classifier."""
    if extractor:
        return extractor
    if find_inception_weights(weights) is not None:
        return "inception"
    if is_reference_dataset(ref) and ref in DATASET_EXTRACTORS:
        return DATASET_EXTRACTORS[ref]
    raise OfflineError(
        f"no extractor for reference {ref!r}: the Inception weights are not on disk and {ref!r} has no "
        f"dataset extractor. Pass --weights PATH (see `ganfuse evaluate --help`) or --extractor NAME"
    )


def build_extractor(
    name: str, weights: str | None = None, resize: str | None = None
) -> FeatureExtractor:
    """``get_extractor`` with the Inception-only options passed only to Inception."""
    if name == "inception":
        return get_extractor("inception", weights=weights, resize=resize or DEFAULT_RESIZE)
    if resize is not None or weights is not None:
        raise ConfigError(
            f"--resize and --weights apply to the inception extractor only, not {name!r}"
        )
    return get_extractor(name)


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    source: str
    reference: str
    n_fake: int
    n_real: int
    extractor: str
    resize: str
    feature_dim: int
    fingerprint: str
    skipped_fake: int = 0
    skipped_real: int = 0
    skipped_files: list[str] = field(default_factory=list)  # the first few, with reasons
    options: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        m = self.metrics
        rows = []
        if "fid" in m:
            rows.append(
                (
                    "FID" if self.extractor == "inception" else f"FD ({self.extractor})",
                    f"{m['fid']:.4f}",
                )
            )
        if "kid" in m:
            rows.append(("KID", f"{m['kid']:.6f} ± {m['kid_std']:.6f}"))
        if "is" in m:
            rows.append(("IS", f"{m['is']:.4f} ± {m['is_std']:.4f}"))
        for key in ("precision", "recall", "density", "coverage"):
            if key in m:
                rows.append((key, f"{m[key]:.4f}"))
        width = max(len(r[0]) for r in rows)
        lines = [
            f"{self.source} vs {self.reference}",
            f"extractor {self.extractor} ({self.feature_dim}-d), resize {self.resize}, "
            f"n_fake {self.n_fake}, n_real {self.n_real}",
            *(f"  {name:<{width}}  {value}" for name, value in rows),
        ]
        for side, count in (("source", self.skipped_fake), ("reference", self.skipped_real)):
            if count:
                lines.append(f"skipped {count} unreadable image(s) in the {side}")
        lines += [f"  {entry}" for entry in self.skipped_files]
        return "\n".join(lines)


def _source_size(extractor: FeatureExtractor) -> int | None:
    """Side at which folder images are read: the extractor's own when it needs exactly that size
    (classifiers); native size for Inception, which resizes itself."""
    return None if extractor.name == "inception" else extractor.input_size


def _features_of(
    source: ImageSource,
    extractor: FeatureExtractor,
    num: int,
    batch_size: int,
    with_probs: bool,
    progress: bool,
) -> ExtractedFeatures:
    available = source.available()
    limit = num if available is None else min(num, available)
    return extract_features(
        source.batches(limit, batch_size),
        extractor,
        limit,
        with_probs=with_probs,
        progress=progress,
        desc=f"features {source.description}",
    )


def evaluate_source(
    source: str | Path | SampleBatches,
    ref: str,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    extractor: str | None = None,
    num: int = DEFAULT_NUM,
    weights: str | None = None,
    resize: str | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    options: MetricOptions | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Score ``source`` (a loaded run, e.g. ``ganfuse.load_run(path)``, or an image folder) against
    ``ref`` (dataset name or folder) with up to ``num`` images on each side."""
    started = time.perf_counter()
    wanted = parse_metrics(metrics)
    if num < 2:
        raise ConfigError(f"--num must be at least 2, got {num}")
    options = options or MetricOptions(seed=seed)
    # Fail on a wrong path before loading a large extractor.
    if not hasattr(source, "sample_batches") and not Path(source).expanduser().is_dir():
        raise DataError(f"source not found: {source} (give a run directory or an image folder)")
    if not is_reference_dataset(ref) and not Path(ref).expanduser().is_dir():
        raise DataError(
            f"reference {ref!r} is neither a dataset ({', '.join(reference_dataset_names())}) nor a folder"
        )
    name = choose_extractor(ref, extractor, weights)
    net = build_extractor(name, weights, resize)
    size = _source_size(net)
    fake_source = open_source(source, net.channels, size, seed=seed)
    real_source = open_reference(ref, net.channels, size)
    batch = batch_size or net.batch_size
    if isinstance(real_source, FolderSource):
        real = _features_of(real_source, net, num, batch, False, progress)
    else:
        real = reference_features(ref, net, num, batch, progress=progress)
    fake = _features_of(fake_source, net, num, batch, "is" in wanted, progress)
    values = compute_metrics(real, fake, wanted, options)
    skipped = [
        f"{path}: {reason}" for path, reason in (fake_source.skipped + real_source.skipped)[:5]
    ]
    return EvaluationResult(
        metrics=values,
        source=fake_source.description if isinstance(fake_source, RunSource) else str(source),
        reference=str(ref),
        n_fake=fake.n,
        n_real=real.n,
        extractor=net.name,
        resize=net.resize,
        feature_dim=net.feature_dim,
        fingerprint=net.fingerprint,
        skipped_fake=len(fake_source.skipped),
        skipped_real=len(real_source.skipped),
        skipped_files=skipped,
        options=asdict(options),
        seconds=round(time.perf_counter() - started, 2),
    )


_EXTRACTORS: dict[str, FeatureExtractor] = {}  # built once per process for repeated evaluations


def frechet_distance_of_generator(
    sample_fn: Callable[[int], torch.Tensor],
    ref_name: str,
    n: int,
    extractor: str | FeatureExtractor | None = None,
    batch_size: int | None = None,
) -> float:
    """Frechet distance between ``n`` samples and the reference dataset ``ref_name`` (its first
    ``n`` images at most).

    ``sample_fn(b)`` returns ``b`` images ``(b, C, H, W)`` float in [-1, 1] (or uint8); it is
    called until ``n`` images have been produced, so pass one that draws from a generator seeded
    per evaluation for comparable numbers across steps. ``extractor`` defaults to Inception when
    its weights are on disk, else the dataset's own. Extractors and reference features are loaded
    once per process and reused.
    """
    if isinstance(extractor, FeatureExtractor):
        net = extractor
    else:
        name = choose_extractor(ref_name, extractor)
        if name not in _EXTRACTORS:
            _EXTRACTORS[name] = build_extractor(name)
        net = _EXTRACTORS[name]
    batch = batch_size or net.batch_size
    real = reference_features(ref_name, net, n, batch)
    sizes = [min(batch, n - start) for start in range(0, n, batch)]
    fake = extract_features((to_uint8(sample_fn(b)) for b in sizes), net, n, with_probs=False)
    r, f = real.stats(), fake.stats()
    return fid_from_stats(r.mean, r.cov, f.mean, f.cov)
