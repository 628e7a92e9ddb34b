"""Frechet distance: agrees with the scipy sqrtm formula and with peers, exact on known cases,
finite on singular covariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganfuse.metrics import FeatureStats, MetricInputError, fid_from_features, fid_from_stats
from ganfuse.metrics.frechet import mean_and_covariance, symmetric_gram, trace_sqrt_product


def sqrtm_fid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(
        ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    )


def correlated(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    mixing = rng.normal(size=(d, d)) / math.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing + shift).astype(np.float32)


@pytest.mark.parametrize(("n", "d"), [(200, 8), (1000, 64), (600, 300)])
def test_matches_scipy_sqrtm_formula(n, d):
    rng = np.random.default_rng(d)
    a, b = correlated(rng, n, d, 0.0), correlated(rng, n + 37, d, 0.3)
    ours, reference = fid_from_features(a, b), sqrtm_fid(a, b)
    assert reference > 1.0
    assert ours == pytest.approx(reference, rel=1e-6)


def test_matches_torchmetrics_and_torch_fidelity_on_stats():
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(1)
    a, b = correlated(rng, 500, 32, 0.0), correlated(rng, 400, 32, 0.5)
    sa, sb = FeatureStats.from_features(a), FeatureStats.from_features(b)
    ours = fid_from_stats(sa.mean, sa.cov, sb.mean, sb.cov)
    peer_tm = float(_compute_fid(sa.mean, sa.cov, sb.mean, sb.cov))
    peer_tf = fid_statistics_to_metric(
        {"mu": sa.mean.numpy(), "sigma": sa.cov.numpy()},
        {"mu": sb.mean.numpy(), "sigma": sb.cov.numpy()},
        False,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(peer_tm, rel=1e-8)
    assert ours == pytest.approx(peer_tf, rel=1e-8)


def test_diagonal_gaussians_have_closed_form():
    # For diagonal covariances FD = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + 0.0 + (3 - 1) ** 2
    assert fid_from_stats(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(
        expected, rel=1e-12
    )


def test_identical_sets_give_zero_and_order_does_not_matter():
    rng = np.random.default_rng(2)
    a, b = correlated(rng, 300, 40, 0.0), correlated(rng, 250, 40, 1.0)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-10)


def test_fewer_samples_than_dimensions_is_finite_and_exact():
    # With n < d the covariances are singular; compare with the identity
    # tr sqrt(S1 S2) = ||A B^T||_* / sqrt((n1 - 1)(n2 - 1)) for centred A, B (an SVD, no sqrtm).
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(15, 64)) + 0.2
    ca, cb = a - a.mean(0), b - b.mean(0)
    nuclear = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / math.sqrt(19 * 14)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    ours = fid_from_features(a, b)
    assert math.isfinite(ours)
    assert ours == pytest.approx(expected, rel=1e-9)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_trace_sqrt_of_rank_deficient_matrices_has_no_nan():
    s = torch.zeros(5, 5, dtype=torch.float64)
    s[0, 0] = 2.0
    assert trace_sqrt_product(s, s) == pytest.approx(2.0)
    assert (
        trace_sqrt_product(
            torch.zeros(4, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
        )
        == 0.0
    )


def test_statistics_are_float64_and_match_numpy():
    rng = np.random.default_rng(4)
    x = correlated(rng, 700, 300, 5.0)  # d > block size, so several gram blocks are used
    mean, cov = mean_and_covariance(torch.from_numpy(x).double())
    assert mean.dtype == cov.dtype == torch.float64
    np.testing.assert_allclose(
        cov.numpy(), np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12
    )
    y = torch.from_numpy(x[:, :260]).double()
    assert torch.equal(symmetric_gram(y), symmetric_gram(y).T)
    torch.testing.assert_close(symmetric_gram(y), y.T @ y, rtol=1e-12, atol=1e-9)


def test_bad_inputs_are_user_errors():
    with pytest.raises(MetricInputError, match="same extractor"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(MetricInputError, match="at least 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(MetricInputError, match="NaN"):
        fid_from_features(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(MetricInputError, match="covariance"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


@pytest.mark.parametrize("kind", ["torch64", "numpy64", "torch32", "numpy32"])
def test_fid_never_modifies_the_callers_features(kind):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)) + 3.0, rng.normal(size=(40, 6)) - 1.0
    dtype = np.float64 if kind.endswith("64") else np.float32
    a, b = a.astype(dtype), b.astype(dtype)
    if kind.startswith("torch"):
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    before = (a.copy(), b.copy()) if isinstance(a, np.ndarray) else (a.clone(), b.clone())
    value = fid_from_features(a, b)
    assert value == pytest.approx(fid_from_features(before[0], before[1]), rel=1e-12)
    for x, y in zip((a, b), before, strict=True):
        assert (x == y).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_single_non_finite_value_in_either_set_is_named(bad):
    a, b = np.zeros((6, 4)), np.random.default_rng(1).normal(size=(7, 4))
    b[3, 2] = bad
    with pytest.raises(MetricInputError, match="^b contains NaN or infinite values"):
        fid_from_features(a, b)
    with pytest.raises(MetricInputError, match="^a contains NaN or infinite values"):
        fid_from_features(b.astype(np.float32), a)
