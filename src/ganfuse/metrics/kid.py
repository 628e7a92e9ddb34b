"""Kernel Inception Distance (Binkowski et al. 2018): the unbiased estimate of the squared maximum
mean discrepancy between two feature sets under the cubic polynomial kernel

    k(x, y) = (x . y / D + 1) ^ 3,

averaged over random equal-size subsets. Unlike the Frechet distance it has no bias from the
number of samples, so values at different N are comparable.
"""

from __future__ import annotations

import torch

from ganfuse.metrics.inputs import ArrayLike, MetricInputError, feature_matrix, same_width


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(x y^T / D + 1)^3`` for ``x`` ``(N, D)``, ``y`` ``(M, D)`` -> ``(N, M)``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between ``x`` ``(N, D)`` and ``y`` ``(M, D)``, N, M >= 2, polynomial kernel.

    ``sum_{i!=j} k(x_i, x_j) / (N(N-1)) + sum_{i!=j} k(y_i, y_j) / (M(M-1)) - 2 sum k(x_i, y_j) / (NM)``.
    """
    n, m = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.sum() / (n * m))


def kid_subset_size(requested: int, n_a: int, n_b: int) -> int:
    """The subset size actually used: ``requested`` clipped to the smaller of the two set sizes.

    Clipping (rather than refusing) means a small evaluation still gets a number; when the clipped
    size equals both set sizes every subset is the full set and the estimate is exact.
    """
    if requested < 2:
        raise MetricInputError(f"KID subset_size must be at least 2, got {requested}")
    return min(requested, n_a, n_b)


def kid_from_features(
    a: ArrayLike, b: ArrayLike, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID between ``a`` ``(N, D)`` and ``b`` ``(M, D)``: (mean, std) of the unbiased MMD^2 over subsets.

    Each of ``subsets`` draws ``s = min(subset_size, N, M)`` rows of ``a`` and of ``b`` without
    replacement (a ``torch.Generator`` seeded with ``seed``). ``std`` is the population standard
    deviation over subsets. When ``N == M <= subset_size`` every subset is the full set, so the
    result is the exact full-set unbiased estimate with std 0 (computed once, whatever ``subsets``).
    """
    x = feature_matrix(a, "a", min_rows=2)
    y = feature_matrix(b, "b", min_rows=2)
    same_width(x, y, ("a", "b"))
    if subsets < 1:
        raise MetricInputError(f"KID needs at least one subset, got subsets={subsets}")
    size = kid_subset_size(subset_size, x.shape[0], y.shape[0])
    if size == x.shape[0] == y.shape[0]:
        # Every subset is a permutation of the full sets, and the estimate ignores order.
        return mmd2_unbiased(x, y), 0.0
    generator = torch.Generator().manual_seed(seed)
    values = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        rows_x = torch.randperm(x.shape[0], generator=generator)[:size]
        rows_y = torch.randperm(y.shape[0], generator=generator)[:size]
        values[i] = mmd2_unbiased(x[rows_x], y[rows_y])
    return float(values.mean()), float(values.std(correction=0))
