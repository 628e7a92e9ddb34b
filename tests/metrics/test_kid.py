"""KID: the unbiased MMD^2 estimate against a direct double loop and against peers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfuse.metrics import MetricInputError, kid_from_features
from ganfuse.metrics.kid import kid_subset_size, mmd2_unbiased


def double_loop_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(9, 5)), rng.normal(size=(9, 5)) * 1.3 + 0.4


def test_full_set_single_subset_equals_double_loop(sets):
    a, b = sets
    mean, std = kid_from_features(a, b, subsets=1, subset_size=9)
    assert mean == pytest.approx(double_loop_mmd2(a, b), rel=1e-12)
    assert std == 0.0


def test_unequal_sizes_equal_double_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 4)), rng.normal(size=(11, 4)) + 0.5
    assert mmd2_unbiased(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        double_loop_mmd2(a, b), rel=1e-12
    )


def test_matches_torchmetrics_and_torch_fidelity_on_full_sets():
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 16)).astype(np.float64)
    b = (rng.normal(size=(60, 16)) + 0.3).astype(np.float64)
    ours, _ = kid_from_features(a, b, subsets=1, subset_size=60)
    peer_tm = float(poly_mmd(torch.from_numpy(a), torch.from_numpy(b)))
    peer_tf = kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=1, kid_subset_size=60, verbose=False
    )["kernel_inception_distance_mean"]
    assert ours == pytest.approx(peer_tm, rel=1e-10)
    assert ours == pytest.approx(peer_tf, rel=1e-10)


def test_subsets_average_subset_estimates_reproducibly():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(80, 8)), rng.normal(size=(70, 8)) + 0.5
    first = kid_from_features(a, b, subsets=20, subset_size=30, seed=5)
    assert first == kid_from_features(a, b, subsets=20, subset_size=30, seed=5)
    assert first != kid_from_features(a, b, subsets=20, subset_size=30, seed=6)
    # The mean over subsets is an unbiased estimate of the same quantity as the full-set one.
    full = mmd2_unbiased(torch.from_numpy(a), torch.from_numpy(b))
    assert abs(first[0] - full) < 3 * first[1]
    assert first[1] > 0


def test_subset_size_is_clipped_to_the_smaller_set():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(25, 6)), rng.normal(size=(40, 6))
    assert kid_subset_size(1000, 25, 40) == 25
    assert kid_from_features(a, b, subsets=3, subset_size=1000) == kid_from_features(
        a, b, subsets=3, subset_size=25
    )


def test_separated_distributions_score_higher():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 16))
    same = rng.normal(size=(300, 16))
    shifted = rng.normal(size=(300, 16)) + 0.5
    near, near_std = kid_from_features(real, same, subsets=10, subset_size=200)
    far, _ = kid_from_features(real, shifted, subsets=10, subset_size=200)
    assert abs(near) < 2 * near_std  # same distribution: zero within the subset spread
    assert far > 50 * abs(near)


def test_invalid_arguments():
    x = np.zeros((5, 2))
    with pytest.raises(MetricInputError):
        kid_from_features(x, x, subsets=0)
    with pytest.raises(MetricInputError):
        kid_from_features(x, x, subset_size=1)
