"""Inception Score: the definition, known values and torch-fidelity as a peer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganfuse.metrics import MetricInputError, inception_score_from_probs
from ganfuse.metrics.inception_score import split_bounds


def definitional_is(p: np.ndarray, splits: int) -> tuple[float, float]:
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0)
        kls = [
            sum(pi * math.log(pi / qi) for pi, qi in zip(row, marginal, strict=True) if pi > 0)
            for row in part
        ]
        scores.append(math.exp(sum(kls) / len(kls)))
    return float(np.mean(scores)), float(np.std(scores))


def random_probs(n: int, k: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, k)) * 3
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "splits"), [(100, 10), (103, 7), (20, 1)])
def test_matches_definition(n, splits):
    p = random_probs(n, 6, n)
    mean, std = inception_score_from_probs(p, splits)
    ref_mean, ref_std = definitional_is(p, splits)
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert std == pytest.approx(ref_std, rel=1e-9, abs=1e-12)


def test_matches_torch_fidelity_without_shuffle():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.from_numpy(np.random.default_rng(1).normal(size=(250, 12)) * 2)
    peer = isc_features_to_metric(logits, splits=10, shuffle=False)
    mean, std = inception_score_from_probs(logits.softmax(dim=1), splits=10)
    assert mean == pytest.approx(peer["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(peer["inception_score_std"], rel=1e-8)


def test_known_values():
    assert inception_score_from_probs(np.full((50, 4), 0.25), splits=5) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(5)[np.arange(100) % 5]  # every split holds each of 5 classes equally
    assert inception_score_from_probs(one_hot, splits=4) == pytest.approx((5.0, 0.0))


def test_splits_are_contiguous_and_cover_every_row():
    bounds = split_bounds(103, 10)
    assert bounds[0][0] == 0 and bounds[-1][1] == 103
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    assert {stop - start for start, stop in bounds} == {10, 11}


def test_rejects_logits_and_bad_splits():
    with pytest.raises(MetricInputError, match="softmax"):
        inception_score_from_probs(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(MetricInputError, match="splits"):
        inception_score_from_probs(np.full((5, 2), 0.5), splits=6)
