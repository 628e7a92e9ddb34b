"""Precision/recall and density/coverage against brute force on full distance matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ganfuse.metrics import (
    MetricInputError,
    density_coverage_from_features,
    prdc,
    precision_recall_from_features,
)


def brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    d_rf = cdist(real, fake)  # (N, M)
    r_pr, f_pr, r_dc = brute_radii(real, k_pr), brute_radii(fake, k_pr), brute_radii(real, k_dc)
    inside_dc = d_rf <= r_dc[:, None]
    return {
        "precision": float((d_rf <= r_pr[:, None]).any(axis=0).mean()),
        "recall": float((d_rf.T <= f_pr[:, None]).any(axis=0).mean()),
        "density": float(inside_dc.sum() / (k_dc * fake.shape[0])),
        "coverage": float(inside_dc.any(axis=1).mean()),
    }


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(150, 10))
    fake = rng.normal(size=(120, 10)) * 1.3 + 1.0
    return real, fake


def test_matches_brute_force(features):
    real, fake = features
    expected = brute_force(real, fake, 3, 5)
    precision, recall = precision_recall_from_features(real, fake, k=3)
    density, coverage = density_coverage_from_features(real, fake, k=5)
    assert (
        0.1 < expected["precision"] < 0.99 and 0.1 < expected["recall"] < 0.99
    )  # a non-trivial case
    assert (precision, recall) == (expected["precision"], expected["recall"])
    assert coverage == expected["coverage"]
    assert density == pytest.approx(expected["density"], rel=1e-12)


def test_matches_torch_fidelity_precision_recall(features):
    from torch_fidelity.metric_prc import prc_features_to_metric

    real, fake = features
    peer = prc_features_to_metric(
        torch.from_numpy(fake),
        torch.from_numpy(real),
        prc_neighborhood=3,
        prc_batch_size=64,
        save_cpu_ram=True,
        verbose=False,
    )
    precision, recall = precision_recall_from_features(real, fake, k=3)
    assert precision == pytest.approx(peer["precision"], rel=1e-6)  # the peer averages in float32
    assert recall == pytest.approx(peer["recall"], rel=1e-6)


def test_tiny_blocks_give_the_same_answer(features, monkeypatch):
    real, fake = features
    whole = precision_recall_from_features(real, fake), density_coverage_from_features(real, fake)
    monkeypatch.setattr(prdc, "_BLOCK_ELEMENTS", 7)  # one row per block, many blocks
    assert (
        precision_recall_from_features(real, fake),
        density_coverage_from_features(real, fake),
    ) == whole


def test_distance_blocks_bound_memory():
    queries, points = (
        torch.zeros(1000, 3, dtype=torch.float64),
        torch.zeros(400, 3, dtype=torch.float64),
    )
    shapes = [tuple(d.shape) for _, d in prdc.distance_blocks(queries, points, block_elements=4000)]
    assert all(rows * cols <= 4000 for rows, cols in shapes)
    assert sum(rows for rows, _ in shapes) == 1000


def test_identical_sets_are_fully_precise_and_covered(features):
    real, _ = features
    assert precision_recall_from_features(real, real) == (1.0, 1.0)
    assert density_coverage_from_features(real, real)[1] == 1.0


def test_self_is_excluded_but_duplicates_count():
    x = np.array([[0.0], [0.0], [1.0], [3.0]])
    radii = prdc.kth_neighbour_radii(torch.from_numpy(x), 1)
    assert radii.tolist() == [0.0, 0.0, 1.0, 2.0]


def test_far_away_fakes_score_zero(features):
    real, fake = features
    assert precision_recall_from_features(real, fake + 100.0) == (0.0, 0.0)
    assert density_coverage_from_features(real, fake + 100.0) == (0.0, 0.0)


def test_k_must_leave_a_neighbour():
    x = np.zeros((3, 2))
    with pytest.raises(MetricInputError, match="k=3"):
        precision_recall_from_features(x, x, k=3)
