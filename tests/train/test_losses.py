import math

import torch

from ganfuse.train import losses

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_nonsaturating_matches_bce_by_hand():
    expected_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert math.isclose(losses.nonsaturating_d_loss(REAL, FAKE).item(), expected_d, rel_tol=1e-6)
    expected_g = (softplus(-0.5) + softplus(3.0)) / 2
    assert math.isclose(losses.nonsaturating_g_loss(FAKE).item(), expected_g, rel_tol=1e-6)
    # equals BCEWithLogits with targets 1 (real) and 0 (fake)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ref = bce(REAL, torch.ones(2)) + bce(FAKE, torch.zeros(2))
    assert torch.allclose(losses.nonsaturating_d_loss(REAL, FAKE), ref)


def test_hinge_by_hand():
    # relu(1 - [2, -1]) = [0, 2] -> 1; relu(1 + [0.5, -3]) = [1.5, 0] -> 0.75
    assert math.isclose(losses.hinge_d_loss(REAL, FAKE).item(), 1.75, rel_tol=1e-6)
    assert math.isclose(losses.hinge_g_loss(FAKE).item(), 1.25, rel_tol=1e-6)


def test_wasserstein_by_hand():
    assert math.isclose(losses.wasserstein_d_loss(REAL, FAKE).item(), -1.25 - 0.5, rel_tol=1e-6)
    assert math.isclose(losses.wasserstein_g_loss(FAKE).item(), 1.25, rel_tol=1e-6)


def test_least_squares_by_hand():
    # 0.5 * (mean([1, 4]) + mean([0.25, 9])) = 0.5 * (2.5 + 4.625)
    assert math.isclose(losses.least_squares_d_loss(REAL, FAKE).item(), 3.5625, rel_tol=1e-6)
    # 0.5 * mean([0.25, 16]) = 4.0625
    assert math.isclose(losses.least_squares_g_loss(FAKE).item(), 4.0625, rel_tol=1e-6)


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    d = d.double()
    x = torch.randn(3, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    penalty = losses.r1_penalty(d(x).squeeze(1), x)
    eps = 1e-6
    total = 0.0
    flat = x.detach().clone().flatten(1)
    for i in range(3):
        for j in range(12):
            plus, minus = flat.clone(), flat.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            g = (d(plus.view_as(x))[i] - d(minus.view_as(x))[i]).item() / (2 * eps)
            total += g * g
    assert math.isclose(penalty.item(), total / 3, rel_tol=1e-6)


def test_gradient_penalty_matches_finite_differences():
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    real = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    gp = losses.gradient_penalty(lambda x: d(x).squeeze(1), real, fake, gen)
    alpha = torch.rand(2, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mixed = (alpha * real + (1 - alpha) * fake).flatten(1)
    eps, expected = 1e-6, 0.0
    for i in range(2):
        grads = []
        for j in range(4):
            plus, minus = mixed.clone(), mixed.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            grads.append((d(plus.view(2, 1, 2, 2))[i] - d(minus.view(2, 1, 2, 2))[i]).item() / (2 * eps))
        expected += (math.sqrt(sum(g * g for g in grads)) - 1) ** 2
    assert math.isclose(gp.item(), expected / 2, rel_tol=1e-5)
