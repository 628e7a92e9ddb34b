"""Nearest-neighbour estimates of fidelity and diversity on features.

Each point ``x`` of a set gets a ball of radius ``NND_k(x)``: the Euclidean distance to its k-th
nearest neighbour in the same set, the point itself excluded (by index, so duplicates count as
neighbours). Balls are closed (``distance <= radius``).

- Improved precision and recall (Kynkaanniemi et al. 2019): precision is the fraction of fake
  points inside at least one real ball; recall the fraction of real points inside at least one
  fake ball.
- Density and coverage (Naeem et al. 2020), with real balls only: density is the number of
  (fake, real-ball) containments divided by ``k * M`` (can exceed 1); coverage is the fraction of
  real points whose ball contains at least one fake point.

All distances are float64 and computed in row blocks: no more than ``_BLOCK_ELEMENTS`` distances
exist at once, so 50,000 x 50,000 sets never build a dense matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ganfuse.metrics.inputs import ArrayLike, MetricInputError, feature_matrix, same_width

_BLOCK_ELEMENTS = 1 << 23  # 8M float64 distances = 64 MiB per block


def distance_blocks(
    queries: torch.Tensor, points: torch.Tensor, block_elements: int = _BLOCK_ELEMENTS
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, d)`` with ``d`` ``(B, M)`` the Euclidean distances from ``queries[start:start+B]``
    ``(N, D)`` to all ``points`` ``(M, D)``."""
    rows = max(1, block_elements // max(points.shape[0], 1))
    point_norms = points.square().sum(dim=1)
    for start in range(0, queries.shape[0], rows):
        q = queries[start : start + rows]
        squared = q.square().sum(dim=1, keepdim=True) + point_norms - 2.0 * (q @ points.T)
        yield start, squared.clamp_min_(0.0).sqrt_()


def kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(N,)`` distance from each row of ``x`` ``(N, D)`` to its k-th nearest other row."""
    if not 1 <= k < x.shape[0]:
        raise MetricInputError(f"k={k} needs 1 <= k < the number of points ({x.shape[0]})")
    radii = torch.empty(x.shape[0], dtype=x.dtype)
    for start, d in distance_blocks(x, x):
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # exclude each point itself
        radii[start : start + d.shape[0]] = d.kthvalue(k, dim=1).values
    return radii


def ball_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64: for each query, how many balls ``(centres[i], radii[i])`` contain it."""
    counts = torch.empty(queries.shape[0], dtype=torch.int64)
    for start, d in distance_blocks(queries, centres):
        counts[start : start + d.shape[0]] = (d <= radii).sum(dim=1)
    return counts


def nearest_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(N,)`` distance from each query to its nearest point."""
    out = torch.empty(queries.shape[0], dtype=queries.dtype)
    for start, d in distance_blocks(queries, points):
        out[start : start + d.shape[0]] = d.min(dim=1).values
    return out


def _real_fake(real: ArrayLike, fake: ArrayLike, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = feature_matrix(real, "real", min_rows=2)
    f = feature_matrix(fake, "fake", min_rows=1)
    same_width(r, f, ("real", "fake"))
    if k < 1:
        raise MetricInputError(f"k must be at least 1, got {k}")
    return r, f


def precision_recall_from_features(
    real: ArrayLike, fake: ArrayLike, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall of ``fake`` ``(M, D)`` against ``real`` ``(N, D)``; k < N and k < M."""
    r, f = _real_fake(real, fake, k)
    precision = (ball_counts(f, r, kth_neighbour_radii(r, k)) > 0).double().mean()
    recall = (ball_counts(r, f, kth_neighbour_radii(f, k)) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage_from_features(
    real: ArrayLike, fake: ArrayLike, k: int = 5
) -> tuple[float, float]:
    """Density and coverage of ``fake`` ``(M, D)`` against ``real`` ``(N, D)``; k < N."""
    r, f = _real_fake(real, fake, k)
    radii = kth_neighbour_radii(r, k)
    density = ball_counts(f, r, radii).sum().double() / (k * f.shape[0])
    coverage = (nearest_distances(r, f) <= radii).double().mean()
    return float(density), float(coverage)
