import pytest
import torch

from ganfuse.models.resnet import ResNetDiscriminator, ResNetGenerator


@pytest.mark.parametrize("size", [32, 64])
def test_resnet_shapes_and_range(size):
    torch.manual_seed(0)
    g = ResNetGenerator(z_dim=16, channels=3, image_size=size, width=16, num_classes=5)
    d = ResNetDiscriminator(channels=3, image_size=size, width=16, num_classes=5)
    y = torch.tensor([0, 4])
    x = g(torch.randn(2, 16), y)
    assert x.shape == (2, 3, size, size) and x.min() >= -1 and x.max() <= 1
    assert d(x, y).logits.shape == (2,)
    # spectral norm is on every layer of D by default
    assert all(hasattr(m, "weight_orig") for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_gradients_reach_every_generator_parameter():
    torch.manual_seed(0)
    g = ResNetGenerator(z_dim=8, channels=1, image_size=32, width=8)
    d = ResNetDiscriminator(channels=1, image_size=32, width=8)
    d(g(torch.randn(3, 8))).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
