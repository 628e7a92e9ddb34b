"""The matching-aware objective, checked by hand on tiny logits."""

from __future__ import annotations

import math

import pytest
import torch

from ganfuse.errors import ConfigError
from ganfuse.metrics.t2i import parse_holdout
from ganfuse.train.losses import (
    info_nce,
    matching_aware_gradient_penalty,
    matching_aware_hinge_d_loss,
)


def test_d_loss_has_the_mismatch_term():
    real = torch.tensor([2.0, 0.5])  # relu(1 - r): 0, 0.5 -> mean 0.25
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + f): 0, 1 -> mean 0.5
    wrong = torch.tensor([1.0, -0.5])  # relu(1 + m): 2, 0.5 -> mean 1.25
    assert matching_aware_hinge_d_loss(real, fake, None).item() == pytest.approx(0.25 + 0.5)
    # DF-GAN's weighting: real + (fake + mismatch) / 2
    assert matching_aware_hinge_d_loss(real, fake, wrong, 1.0).item() == pytest.approx(0.25 + (0.5 + 1.25) / 2)
    # weight w: real + (fake + w * mismatch) / (1 + w); w = 0 is the plain hinge loss
    assert matching_aware_hinge_d_loss(real, fake, wrong, 3.0).item() == pytest.approx(0.25 + (0.5 + 3 * 1.25) / 4)
    assert matching_aware_hinge_d_loss(real, fake, wrong, 0.0).item() == pytest.approx(0.75)


def test_d_loss_pushes_mismatched_pairs_down():
    wrong = torch.tensor([0.3, -0.2], requires_grad=True)
    matching_aware_hinge_d_loss(torch.zeros(2), torch.zeros(2), wrong).backward()
    assert (wrong.grad > 0).all()  # minimising the loss lowers the mismatched logits


def test_info_nce_by_hand():
    image = torch.eye(2)
    text = torch.eye(2)
    # logits = I / 0.1: diagonal 10, off-diagonal 0 -> loss = log(1 + e^-10) each way
    assert info_nce(image, text).item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-2)
    swapped = text.flip(0)
    assert info_nce(image, swapped, symmetric=False).item() == pytest.approx(math.log1p(math.exp(10.0)), rel=1e-4)


def test_info_nce_counts_extra_negatives():
    image = text = torch.eye(2)
    negatives = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # image 0 now competes with one more text equal to its own: log(1 + e^-10 + e^0)... by hand
    expected = [math.log(1 + math.exp(-10) + math.exp(0) + 2 * math.exp(-10)),
                math.log(1 + math.exp(-10) + 2 * math.exp(0) + math.exp(-10))]
    got = info_nce(image, text, symmetric=False, negatives=negatives).item()
    assert got == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_magp_of_a_linear_discriminator():
    # logits = <w, x> + <v, c>: the gradient norm is ||(w, v)|| for every sample
    w, v = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    x = torch.randn(5, 2, requires_grad=True)
    c = torch.randn(5, 2, requires_grad=True)
    logits = x @ w + c @ v
    penalty = matching_aware_gradient_penalty(logits, x, c, power=6.0)
    assert penalty.item() == pytest.approx(5.0**6, rel=1e-4)
    assert matching_aware_gradient_penalty(x @ w + c @ v, x, c, power=2.0).item() == pytest.approx(25.0, rel=1e-4)


def test_holdout_strings_parse_and_bad_ones_name_the_key():
    assert parse_holdout(["red triangle", "Blue-square"]) == (("red", "triangle"), ("blue", "square"))
    assert parse_holdout(None) is None
    with pytest.raises(ConfigError, match="data.holdout"):
        parse_holdout(["red"])
