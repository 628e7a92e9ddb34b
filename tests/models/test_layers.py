"""The building blocks every network family shares."""

from __future__ import annotations

import torch
from torch import nn

from ganfuse.models.dcgan import DCGANDiscriminator
from ganfuse.models.layers import maybe_spectral_norm
from ganfuse.models.resnet import ResNetDiscriminator


def test_maybe_spectral_norm_normalises_only_when_enabled():
    torch.manual_seed(0)
    plain = nn.Linear(6, 4)
    assert maybe_spectral_norm(plain, False) is plain
    assert not hasattr(plain, "weight_orig")
    wrapped = maybe_spectral_norm(nn.Linear(6, 4), True)
    assert hasattr(wrapped, "weight_orig")
    with torch.no_grad():  # singular values 3, 1, 0.5, 0.2: power iteration converges fast
        wrapped.weight_orig.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2])) @ torch.eye(4, 6))
    wrapped.train()
    for _ in range(20):  # one power-iteration step per training-mode forward
        wrapped(torch.zeros(1, 6))
    sigma = torch.linalg.matrix_norm(wrapped.weight.detach(), ord=2).item()
    assert abs(sigma - 1.0) < 1e-3


def test_every_weighted_layer_of_a_spectral_norm_discriminator_is_normalised():
    for d in (DCGANDiscriminator(1, 8, num_classes=10, use_spectral_norm=True),
              ResNetDiscriminator(1, 32, 16, num_classes=10, use_spectral_norm=True)):
        weighted = [m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]
        assert weighted and all(hasattr(m, "weight_orig") for m in weighted), type(d).__name__
